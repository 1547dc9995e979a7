#!/usr/bin/env bash
# Random golden cases: tests/golden_gen.py computes them with PyTorch autograd in float64 (shapes,
# algorithms, losses, pooling and step counts the shipped cases do not cover), then the golden test
# binary runs every one on both kernel implementations and through the CLI, each tensor held to the
# same 1e-3 relative error. Usage: golden_random.sh WORKER_TEST_BINARY [COUNT] [SEED]
# ($METAPS_GOLDEN_SEED overrides the seed). Exits 77 (skipped) when /usr/bin/python3 has no torch
# (Debian's python3-torch, which launch/test.sh installs).
set -euo pipefail
bin="$1"
count="${2:-60}"
seed="${METAPS_GOLDEN_SEED:-${3:-20261125}}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "golden_random: /usr/bin/python3 cannot import torch (apt-get install python3-torch); skipped"
  exit 77
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# The generator must reproduce the shipped cases before its own are trusted. A case it cannot
# reproduce (a set of cases with something it does not model) makes this test a skip, not a
# failure: the engine's own check of those cases is GoldenTest on the shipped directory.
if [ -d "${METAPS_SHARED:-}/golden" ]; then
  if ! verified="$(/usr/bin/python3 "$here/golden_gen.py" --verify "$METAPS_SHARED/golden" 2>&1)"; then
    echo "$verified" | tail -3
    echo "golden_random: tests/golden_gen.py does not reproduce the shipped cases; its own are not trusted; skipped"
    exit 77
  fi
  echo "$verified" | tail -1
fi
/usr/bin/python3 "$here/golden_gen.py" --out "$dir" --count "$count" --seed "$seed"
METAPS_GOLDEN_DIR="$dir" "$bin" --gtest_filter='GoldenTest.*'
