#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the main job: `kdseg reproduce`, the paper's
# experiment on the embedded synthetic cohort (three teachers, their ensemble, pseudo-labels, the
# distilled student, a labelled-only control and an oracle, over 3 seeds; see the README for the
# wall time on 2 cores). Outputs go to work/reproduce (or $KDSEG_WORK/reproduce); a rerun resumes
# where a run stopped. Extra arguments go to kdseg reproduce, e.g. `bash scripts/main.sh --preset
# quick` for a first look (another preset writes to work/reproduce-<preset>).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
work=${KDSEG_WORK:-work}
# One folder per preset: a rerun of the same command resumes, another preset starts afresh.
out="$work/reproduce"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --preset=*) preset=${args[i]#--preset=} ;;
    --preset) preset=${args[i + 1]:-} ;;
  esac
done
if [[ -n ${preset:-} && $preset != cpu ]]; then out="$work/reproduce-$preset"; fi
"$build/kdseg" --version
"$build/kdseg" reproduce --out "$out" "$@"
