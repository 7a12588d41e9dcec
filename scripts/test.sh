#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir "${KDSEG_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
