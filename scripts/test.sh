#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the test suite. The two whole-method end-to-end
# tests (Distillation.*, Reproduce.*: several trainings each, minutes on 2 idle cores, longer on a
# loaded machine) run apart, one at a time, after the rest: `KDSEG_SKIP_SLOW=1` leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
slow='^(Distillation|Reproduce)\.'
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -E "$slow"
if [[ -z ${KDSEG_SKIP_SLOW:-} ]]; then
  ctest --test-dir "$build" --output-on-failure -j 1 -R "$slow" --timeout 900
fi
