#!/usr/bin/env bash
# Cross-builds tqm for 64-bit Arm (AArch64) and runs tests under qemu-user:
# the NEON lanes decoder, the portable code paths x86 never takes, unsigned
# `char`, a weaker memory model (qemu runs the threads on the host's cores).
#
#   scripts/cross-aarch64.sh                   # the default test binaries and
#                                              # the fuzz corpora replayed
#   scripts/cross-aarch64.sh entropy_test ...  # these instead
# Tests that start tqm's tools as programs (tools_test, runtime_test) are not
# run: the host has no binfmt handler for Arm binaries.
#
# Installs what it needs from Debian (arm64 multiarch libraries, the cross
# compiler, qemu-user) with apt-get, as root or with sudo. Correctness only:
# qemu says nothing about speed on Arm hardware.
# Environment: TQM_AARCH64_BUILD_DIR (default build-aarch64), JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${TQM_AARCH64_BUILD_DIR:-build-aarch64}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
if [ $# -gt 0 ]; then
  TESTS=("$@")
else
  TESTS=(entropy_test vectors_test conformance_test seqtable_test json_test loader_test
         format_test)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
pkgs=(g++-aarch64-linux-gnu qemu-user libabsl-dev:arm64 libzstd-dev:arm64
      libxxhash-dev:arm64 libgtest-dev:arm64 libboost-dev:arm64)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross-aarch64: installing ${missing[*]}"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B "$DIR" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake >/dev/null
FUZZ=()
if [ $# -eq 0 ]; then FUZZ=(fuzz_open fuzz_chunk fuzz_roundtrip); fi
cmake --build "$DIR" -j "$JOBS" --target "${TESTS[@]}" "${FUZZ[@]}"
for t in "${TESTS[@]}"; do
  echo "cross-aarch64: $t (qemu-aarch64)"
  qemu-aarch64 "$DIR/bin/$t"
done
for f in "${FUZZ[@]}"; do
  echo "cross-aarch64: $f replaying fuzz/corpus/$f (qemu-aarch64)"
  qemu-aarch64 "$DIR/bin/$f" "fuzz/corpus/$f"
done
echo "cross-aarch64: all passed"
