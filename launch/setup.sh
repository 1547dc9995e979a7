#!/usr/bin/env bash
# Installs the Debian packages metaps needs, then configures and builds it.
# Idempotent and non-interactive. Usage: launch/setup.sh [--no-build] [--build-type Release|Debug]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_type=Release
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --build-type) build_type="$2"; shift ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

pkgs=(build-essential cmake ninja-build pkg-config
      libzmq3-dev cppzmq-dev capnproto libcapnp-dev libdnnl-dev librocksdb-dev
      libboost-dev libgtest-dev libgmock-dev libbenchmark-dev
      libtomlplusplus-dev libcli11-dev libspdlog-dev nlohmann-json3-dev libsodium-dev libxxhash-dev
      iproute2 procps openssh-client)
source "$here/launch/apt.sh"
apt_install_missing "${pkgs[@]}"

if [ "$do_build" -eq 1 ]; then
  cmake -S "$here" -B "$here/build" -G Ninja -DCMAKE_BUILD_TYPE="$build_type"
  cmake --build "$here/build" -j "$(nproc)"
fi
