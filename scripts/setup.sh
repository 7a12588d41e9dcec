#!/usr/bin/env bash
# Installs every Debian package kdseg needs to build, test and run. Idempotent: a second run
# installs nothing new. Run as root (or with sudo) on Debian 12.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp libgloo-dev   # LibTorch 1.13.1, optimised BLAS, c10d Gloo
  libdeflate-dev zlib1g-dev                      # fast gzip inflate (+ zlib as the baseline)
  libcli11-dev nlohmann-json3-dev                # command line, JSON
  libgtest-dev libgmock-dev                      # unit tests
  mricron-data                                   # Colin27 template for the synthetic cohort
  python3-nibabel python3-numpy                  # cross-reader round-trip tests (/usr/bin/python3)
  clang libclang-rt-14-dev                       # libFuzzer target for the NIfTI reader
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages already installed"
fi
