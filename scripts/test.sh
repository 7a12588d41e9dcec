#!/usr/bin/env bash
# Installs what kdseg needs, builds it, and runs the test suite. The tests that train models
# (the two whole-method end-to-end tests, Distillation.* and Reproduce.*: several trainings each,
# minutes on 2 idle cores; FastPath.*: 45 s alone, 121 s beside the others on 2 cores, against a
# 180 s limit) run apart, one at a time, after the rest: `KDSEG_SKIP_SLOW=1` leaves them out.
# scripts/package_test.sh then builds the .deb, installs it and runs the installed kdseg (~15 s;
# skipped without root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build=${KDSEG_BUILD_DIR:-build}
slow='^(Distillation|Reproduce|FastPath)\.'
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -E "$slow"
KDSEG_BUILD_DIR=$build bash scripts/package_test.sh
if [[ -z ${KDSEG_SKIP_SLOW:-} ]]; then
  ctest --test-dir "$build" --output-on-failure -j 1 -R "$slow" --timeout 900
fi
