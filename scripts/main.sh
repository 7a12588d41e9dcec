#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the main job on data kdseg makes itself.
# Until `kdseg reproduce` exists, the main job is the most complete pipeline the project runs:
# reading a BraTS-sized case (libdeflate vs zlib) and the build's facts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
"$build/kdseg" --version
"$build/bench/bench_nifti_read" --reps 3
