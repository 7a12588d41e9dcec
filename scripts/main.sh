#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the main job on data kdseg makes itself.
# Until `kdseg reproduce` exists, the main job is the most complete pipeline kdseg runs: grow the
# synthetic cohort, check it as a user's dataset, draw a case, score the hidden truth of the
# unlabelled cases with the BraTS metrics, and list the networks. Outputs go to work/ (or
# $KDSEG_WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
work=${KDSEG_WORK:-work}
kdseg="$build/kdseg"
"$kdseg" --version
"$kdseg" models
"$kdseg" synth --out "$work/cohort" --labeled 6 --unlabeled 12 --test 6 --spacing 3 --seed 2019
"$kdseg" check "$work/cohort/labeled" --quiet
"$kdseg" montage --case "$work/cohort/labeled/SYN_L0001" --out "$work/SYN_L0001.png"
"$kdseg" evaluate --pred "$work/cohort/hidden" --ref "$work/cohort/hidden" --out "$work/eval" --quiet
echo "main: cohort in $work/cohort, montage $work/SYN_L0001.png, metrics in $work/eval"
