#!/usr/bin/env bash
# Installs the Debian packages tqm builds with, only those that are missing.
# Uses sudo when not root. Safe to run repeatedly.
set -euo pipefail
pkgs=(cmake make g++ pkg-config libboost-dev libzstd-dev libxxhash-dev libcli11-dev
      libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev python3 python3-numpy
      python3-torch python3-venv python3-pip python3-setuptools python3-wheel
      clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
