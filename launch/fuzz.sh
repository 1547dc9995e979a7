#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz and runs each for a while.
# Installs what the fuzz build needs (Debian packages; idempotent, non-interactive), configures
# build-fuzz with -DMETAPS_FUZZ=ON, builds the `fuzzers` target, then runs every target for
# SECONDS (default 60) on a copy of its seed corpus (fuzz/corpus/<target>, left untouched) and
# prints its executions and coverage. When a target fails, the input libFuzzer saved
# (build-fuzz/findings/<target>/crash-*, leak-*, timeout-*, oom-*; the log beside it) is replayed
# alone. Exit status: 0 no finding; 1 a finding that reproduces on replay; 3 a target failed but
# no saved input reproduces it (reported, logs kept). The normal build never needs clang.
# Usage: launch/fuzz.sh [seconds_per_target] [target...]
#   env: FUZZ_JOBS (build parallelism, default 2), FUZZ_RSS_MB (default 2048)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_wire fuzz_config fuzz_movielens100k fuzz_movielens1m fuzz_csv fuzz_score_request)
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
    fuzz_score_request) echo score ;;
    *) echo movielens ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Clang 14's sanitizers assume at most 28 bits of mmap randomisation; kernels that use more
# (vm.mmap_rnd_bits = 32 on some newer kernels) let a mapping land in the shadow region now and
# then, and the target segfaults before or between inputs for no fault of the code. There, the
# targets run with address randomisation off (setarch -R), which costs a fuzzer nothing.
norandom=()
rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
if [ "$rnd_bits" -gt 28 ] && command -v setarch >/dev/null && setarch "$(uname -m)" -R true 2>/dev/null; then
  norandom=(setarch "$(uname -m)" -R)
  echo "fuzz: vm.mmap_rnd_bits = $rnd_bits > 28: running the targets with address randomisation off"
fi

# run_target TARGET WORK FOUND LOG [extra libFuzzer flags...]: one run on a fresh copy of the seeds.
run_target() {
  local t="$1" work="$2" found="$3" log="$4" rc=0
  shift 4
  rm -rf "$work"
  mkdir -p "$work/corpus" "$found"
  cp -r "$here/fuzz/corpus/$t/." "$work/corpus/"
  if [ "$t" = fuzz_wire ]; then
    # The seed writer is a plain program built with the sanitizers, not a fuzz target.
    ASAN_OPTIONS=detect_leaks=0 "${norandom[@]}" "$build/fuzz/make_wire_seeds" "$work/corpus" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "make_wire_seeds failed (rc=$rc)" >>"$log"
      return "$rc"
    fi
  fi
  "${norandom[@]}" "$build/fuzz/$t" "$work/corpus" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=25 \
    -dict="$here/fuzz/dict/$(dict_of "$t").dict" -print_final_stats=1 -artifact_prefix="$found/" "$@" \
    >"$log" 2>&1
}

# The artifact libFuzzer wrote in this run (crash-, leak-, timeout- or oom-), if any. find, not ls
# on globs: a glob that matches nothing must not end the script under set -e -o pipefail.
newest_artifact() {
  find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
    -newer "$2" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-
}

failed=()       # a finding that reproduces when its input is replayed alone
unconfirmed=()  # the run failed, but no kept input reproduces it
summary=()
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  found="$build/findings/$t"
  log="$found/last-run.log"
  echo "== $t: ${seconds}s"
  note=""
  rc=0
  run_target "$t" "$work" "$found" "$log" || rc=$?
  # LeakSanitizer cannot run where the process is traced (ptrace: strace, gdb, some CI sandboxes).
  # It then dies at its first leak check, and libFuzzer reports that as a crash on whatever input
  # it was running. That says nothing about the code: drop the artifact and run the target again
  # without leak detection (AddressSanitizer and UBSan still check every input).
  if [ "$rc" -ne 0 ] && grep -q 'LeakSanitizer has encountered a fatal error' "$log"; then
    bogus=$(newest_artifact "$found" "$work")
    [ -z "$bogus" ] || rm -f "$bogus"
    mv "$log" "$found/lsan-unavailable.log"
    echo "$t: LeakSanitizer cannot run here (log: $found/lsan-unavailable.log); running again without leak detection"
    note=" (no leak detection: LeakSanitizer cannot run in this environment)"
    rc=0
    ASAN_OPTIONS="${ASAN_OPTIONS//detect_leaks=1/detect_leaks=0}" run_target "$t" "$work" "$found" "$log" \
      -detect_leaks=0 || rc=$?
  fi
  # `|| true`: a log without these lines (a target that died at start-up) must not end the script.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
  line="$t: ${execs:-?} executions, ${speed:-?} exec/s, ${cov:-no coverage line}$note"
  if [ "$rc" -ne 0 ]; then
    input=$(newest_artifact "$found" "$work")
    grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY|HINT|DEADLYSIGNAL|failed' "$log" | head -8 || true
    # Replay the saved input once, alone: a finding that reproduces is a bug in the code; one that
    # does not (a timeout or an out-of-memory on a loaded machine, a sanitizer failing in this
    # environment, state built up over many inputs) is reported but counted apart.
    # With no input saved (the target died outside an input, e.g. at start-up), the seeds alone are
    # run again instead (-runs=0: the initial corpus, no mutations).
    replay_rc=0
    if [ -n "$input" ]; then
      "${norandom[@]}" "$build/fuzz/$t" "$input" -rss_limit_mb="$rss_mb" -timeout=25 >"$found/replay.log" 2>&1 || replay_rc=$?
    else
      "${norandom[@]}" "$build/fuzz/$t" "$work/corpus" -runs=0 -rss_limit_mb="$rss_mb" -timeout=25 \
        >"$found/replay.log" 2>&1 || replay_rc=$?
    fi
    if [ "$replay_rc" -ne 0 ]; then verdict="reproduces on replay"; else verdict="does not reproduce on replay"; fi
    line="$line -- CRASH (rc=$rc), $verdict, input: ${input:-none saved (the seeds were run again)}, log: $log"
    if [ "$replay_rc" -ne 0 ]; then failed+=("$t"); else unconfirmed+=("$t"); fi
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
if [ ${#unconfirmed[@]} -gt 0 ]; then
  echo "fuzz: ${#unconfirmed[@]} target(s) failed without a reproducible input: ${unconfirmed[*]} (logs in $build/findings/)" >&2
  exit 3
fi
