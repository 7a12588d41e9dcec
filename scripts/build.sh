#!/usr/bin/env bash
# Configures and builds kdseg (Release) into build/ (or $KDSEG_BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${KDSEG_BUILD_DIR:-build}
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$build_dir" -j "$(nproc)"
