#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz and runs each for a while.
# Installs what the fuzz build needs (Debian packages; idempotent, non-interactive), configures
# build-fuzz with -DMETAPS_FUZZ=ON, builds the `fuzzers` target, then runs every target for
# SECONDS (default 60) on a copy of its seed corpus (fuzz/corpus/<target>, left untouched) and
# prints its executions and coverage. Exits non-zero when a target crashes; the crashing input is
# kept as build-fuzz/findings/<target>/crash-* (with the log). The normal build never needs clang.
# Usage: launch/fuzz.sh [seconds_per_target] [target...]
#   env: FUZZ_JOBS (build parallelism, default 2), FUZZ_RSS_MB (default 2048)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_wire fuzz_config fuzz_movielens100k fuzz_movielens1m fuzz_csv)
jobs="${FUZZ_JOBS:-2}"
rss_mb="${FUZZ_RSS_MB:-2048}"

# The project's own packages first (no build), then the fuzz-only ones: clang and libFuzzer's
# runtime (libclang-rt-14-dev ships libclang_rt.fuzzer*.a and the sanitizer runtimes on Debian 12),
# llvm for llvm-symbolizer (symbolized sanitizer reports).
"$here/launch/setup.sh" --no-build
fuzz_pkgs=(clang libclang-rt-14-dev llvm)
source "$here/launch/apt.sh"
apt_install_missing "${fuzz_pkgs[@]}"

build="$here/build-fuzz"
start=$(date +%s)
CC=clang CXX=clang++ cmake -S "$here" -B "$build" -G Ninja -DMETAPS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzzers -j "$jobs"
echo "fuzz build: $(( $(date +%s) - start ))s"

dict_of() {
  case "$1" in
    fuzz_wire) echo wire ;;
    fuzz_config) echo toml ;;
    fuzz_csv) echo csv ;;
    *) echo movielens ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
summary=()
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  found="$build/findings/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$found"
  cp -r "$here/fuzz/corpus/$t/." "$work/corpus/"
  if [ "$t" = fuzz_wire ]; then "$build/fuzz/make_wire_seeds" "$work/corpus" >/dev/null; fi
  log="$found/last-run.log"
  echo "== $t: ${seconds}s"
  rc=0
  "$build/fuzz/$t" "$work/corpus" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=25 \
    -dict="$here/fuzz/dict/$(dict_of "$t").dict" -print_final_stats=1 -artifact_prefix="$found/" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  line="$t: ${execs:-?} executions, ${speed:-?} exec/s, ${cov:-no coverage line}"
  if [ "$rc" -ne 0 ]; then
    line="$line -- CRASH (rc=$rc), input: $(ls "$found"/crash-* "$found"/leak-* "$found"/timeout-* "$found"/oom-* 2>/dev/null | tail -1), log: $log"
    grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY' "$log" | head -5 || true
    failed+=("$t")
  fi
  echo "$line"
  summary+=("$line")
done
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}" >&2
  exit 1
fi
