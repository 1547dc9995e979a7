#!/usr/bin/env bash
# Sets up (Debian packages, configure, build) and runs the demo job: a synthetic cold-start set,
# 2 parameter-server shards, 2 workers and a scheduler on loopback, evaluated against baselines.
# Extra arguments go to `metaps run` (e.g. --set meta.algo=fomaml).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/launch/setup.sh"
cd "$here"
exec build/bin/metaps run examples/synthetic.toml "$@"
