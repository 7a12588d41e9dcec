#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the main job: `kdseg reproduce`, the paper's
# experiment on the embedded synthetic cohort (three teachers, their ensemble, pseudo-labels, the
# distilled student and a labelled-only control, over 3 seeds; ~20 minutes on 2 cores). Outputs
# go to work/reproduce (or $KDSEG_WORK/reproduce); a rerun resumes where a run stopped. Extra
# arguments go to kdseg reproduce, e.g. `bash scripts/main.sh --seeds 1` for a quicker first look.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
work=${KDSEG_WORK:-work}
"$build/kdseg" --version
"$build/kdseg" reproduce --out "$work/reproduce" "$@"
