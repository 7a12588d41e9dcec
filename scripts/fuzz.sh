#!/usr/bin/env bash
# Builds a libFuzzer target (clang, ASan, UBSan, without LibTorch) and runs it on a scratch copy of
# its corpus for the given number of seconds (default 600):
#   scripts/fuzz.sh [SECONDS] [nifti|checkpoint]   (default nifti: fuzz_nifti on fuzz/corpus;
#                                                   checkpoint: fuzz_checkpoint on
#                                                   fuzz/checkpoint_corpus)
# New inputs that grow coverage stay in the scratch copy; merge the useful ones into the corpus by
# hand (fuzz_nifti -merge=1 fuzz/corpus SCRATCH) to keep the committed corpus small.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
target=${2:-nifti}
case "$target" in
  nifti) corpus=fuzz/corpus; extra=() ;;
  checkpoint) corpus=fuzz/checkpoint_corpus; extra=(-dict=fuzz/checkpoint.dict) ;;
  *) echo "fuzz.sh: unknown target $target (nifti or checkpoint)" >&2; exit 2 ;;
esac
build=${KDSEG_FUZZ_BUILD_DIR:-build-fuzz}
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DKDSEG_WITH_TORCH=OFF -DKDSEG_BUILD_FUZZ=ON -DKDSEG_BUILD_TESTS=OFF -DKDSEG_BUILD_BENCH=OFF
fi
cmake --build "$build" --target "fuzz_$target"
scratch=$(mktemp -d)
cp "$corpus"/* "$scratch"/
"$build/fuzz/fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "${extra[@]}" "$scratch"
echo "fuzz: corpus grown in $scratch"
