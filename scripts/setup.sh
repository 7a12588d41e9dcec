#!/usr/bin/env bash
# Installs every Debian package kdseg needs to build, test and run. Idempotent: a second run
# installs nothing new. Run as root (or with sudo) on Debian 12.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopenblas0-openmp libgloo-dev   # LibTorch 1.13.1, optimised BLAS, c10d Gloo
  libdnnl-dev                                    # oneDNN: the student's bf16 CPU inference path
  libjemalloc-dev                                # the process allocator (util/memory.h)
  libdeflate-dev zlib1g-dev                      # fast gzip inflate (+ zlib as the baseline)
  libcli11-dev nlohmann-json3-dev                # command line, JSON
  libgtest-dev libgmock-dev                      # unit tests
  mricron-data                                   # Colin27 template for the synthetic cohort
  python3-nibabel python3-numpy                  # cross-reader round-trip tests (/usr/bin/python3)
  python3-torch                                  # checkpoints must load in Python (torch.load)
  python3-onnx                                   # python -m kdseg export --format onnx: the plan
                                                 # as metadata, onnx.checker in the tests
  clang libclang-rt-14-dev                       # libFuzzer target for the NIfTI reader
  chromium                                       # report: the headless page test
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm fetches the report's NiiVue (web_deps.sh); a Node.js that bundles its own npm (NodeSource's
# nodejs) conflicts with Debian's npm package, so that one is only asked for when npm is missing.
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages already installed"
fi

# LibTorch's BLAS calls go through Debian's libblas.so.3 alternative: make it OpenBLAS (OpenMP),
# not the reference BLAS (measured ~4x slower training).
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
  target=/usr/lib/$multiarch/openblas-openmp/$lib
  if [[ -e $target ]] && update-alternatives --query "$lib-$multiarch" >/dev/null 2>&1; then
    current=$(update-alternatives --query "$lib-$multiarch" | awk '/^Value:/ {print $2}')
    if [[ $current != "$target" ]]; then
      ${SUDO:-} update-alternatives --set "$lib-$multiarch" "$target"
    fi
  fi
done

# The report's web dependency (NiiVue) into the git-ignored third_party/niivue/; quiet when there.
bash "$(dirname "$0")/web_deps.sh"

# ONNX Runtime for Node.js (not in Debian) into the git-ignored third_party/onnxruntime-node/:
# the ONNX export tests run exported files in it. Optional: without it they are not run.
bash "$(dirname "$0")/onnx_deps.sh" ||
  echo "setup: onnx_deps.sh failed; the tests will not run ONNX files" >&2
