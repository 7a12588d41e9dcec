#!/usr/bin/env bash
# Builds the libFuzzer target for the NIfTI reader (clang, ASan, UBSan, without LibTorch) and runs
# it on a scratch copy of the corpus for the given number of seconds (default 600). New inputs that
# grow coverage stay in the scratch copy; merge the useful ones into fuzz/corpus by hand
# (fuzz_nifti -merge=1 fuzz/corpus SCRATCH) to keep the committed corpus small.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
build=${KDSEG_FUZZ_BUILD_DIR:-build-fuzz}
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DKDSEG_WITH_TORCH=OFF -DKDSEG_BUILD_FUZZ=ON -DKDSEG_BUILD_TESTS=OFF -DKDSEG_BUILD_BENCH=OFF
fi
cmake --build "$build" --target fuzz_nifti
scratch=$(mktemp -d)
cp fuzz/corpus/* "$scratch"/
"$build/fuzz/fuzz_nifti" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "$scratch"
echo "fuzz: corpus grown in $scratch"
