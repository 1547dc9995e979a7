#!/usr/bin/env bash
# Sets up (Debian packages, configure, build) and runs the whole test suite with ctest.
# Usage: launch/test.sh [extra ctest args, e.g. -L unit]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$here/launch/setup.sh"
# The reference for the random golden cases (tests/golden_gen.py): PyTorch autograd in float64.
# Without it the suite still runs; ctest reports golden_random as skipped.
source "$here/launch/apt.sh"
apt_install_missing python3-torch ||
  echo "test.sh: could not install python3-torch; the golden_random test will be skipped" >&2
# tests/launch_test.cc runs a job over ssh through an sshd of its own on loopback (own keys, own
# config): it needs the sshd program. Note that on a machine with systemd the package also
# enables the system's ssh service, as any install of openssh-server does.
apt_install_missing openssh-server ||
  echo "test.sh: could not install openssh-server; the ssh launch test will be skipped" >&2
cd "$here"
ctest --test-dir build --output-on-failure --timeout 900 -j 2 "$@"
