#!/usr/bin/env bash
# bench/predict_default.sh — whole-process time and peak memory of segmenting one 1 mm case with
# the paper-size student and 4 X/Y flips plus the authors' post-processing, three ways in one
# command: the authors'-style PyTorch inference (bench/reference/infer_reference.py, Debian's
# python3-torch, fp32), `kdseg predict` with its defaults (--precision auto), `kdseg predict
# --precision fp32` (the student through oneDNN where the CPU has AVX2 or AVX-512) and the same
# with `--engine torch` (LibTorch's fp32). Prints each run and the ratios of the best of REPS (2)
# to the reference's.
#
#   bench/predict_default.sh [BUILD_DIR] [student|teachers]
#                                             THREADS (all cores), OUT (BUILD_DIR/bench_predict)
# About 3 minutes on a 2-core machine. The checkpoint is a paper-size student after one training
# step (speed does not depend on the weights).
#
# `teachers`: the same for the three paper-size teachers (unet, resunet-vae, cascade; one
# training step each, made once) as one ensemble, what pseudo-labelling costs per case: the
# reference runs them one after another in the authors' style (each with its 4 flips, the
# probabilities averaged), kdseg as `predict --model U --model R --model C`. About 15 minutes.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${OUT:-$build/bench_predict}
reps=${REPS:-2}
threads=${THREADS:-$(nproc)}
kdseg=$build/kdseg
py=/usr/bin/python3
[[ -x $kdseg ]] || { echo "predict_default.sh: $kdseg is missing: build first" >&2; exit 2; }
$py -c 'import torch' 2>/dev/null || { echo "predict_default.sh: $py has no torch" >&2; exit 2; }
mkdir -p "$out"
case_dir=$out/cohort/labeled/SYN_L0001
what=${2:-student}
[[ $what == student || $what == teachers ]] ||
  { echo "predict_default.sh: say student or teachers, not $what" >&2; exit 2; }
[[ -d $case_dir ]] || "$kdseg" synth --out "$out/cohort" --labeled 1 --unlabeled 0 --test 0 \
  --spacing 1 --seed 1 --quiet
models=(student)
[[ $what == teachers ]] && models=(unet resunet-vae cascade)
ref_args=() kdseg_args=()
for m in "${models[@]}"; do
  run=$out/run-$m
  [[ $m == student ]] && run=$out/run  # where earlier runs of this script put it
  [[ -f $run/checkpoints/last.pt ]] || "$kdseg" train --data "$out/cohort/labeled" --out "$run" \
    --model "$m" --steps 1 --val-every 0 --threads "$threads" --quiet >/dev/null
  ref_args+=(--checkpoint "$run/checkpoints/last.pt")
  kdseg_args+=(--model "$run/checkpoints/last.pt")
done

post=(--tta xy --et-min-mm3 32 --min-component-fraction 0.1 --threads "$threads" --quiet)
declare -A best_s best_kb
measure() {  # name, command...: whole-process seconds and peak RSS, best of $reps
  local name=$1
  shift
  for ((r = 1; r <= reps; r++)); do
    rm -rf "$out/pred"
    /usr/bin/time -f "%e %M" -o "$out/time.txt" "$@" >/dev/null 2>"$out/stderr.txt" ||
      { cat "$out/stderr.txt" >&2; exit 1; }
    read -r s kb <"$out/time.txt"
    printf '%-34s run %d: %6.2f s  %5.2f GB\n' "$name" "$r" "$s" "$(awk "BEGIN{print $kb/1048576}")"
    if [[ -z ${best_s[$name]:-} ]] || awk "BEGIN{exit !($s < ${best_s[$name]})}"; then
      best_s[$name]=$s
      best_kb[$name]=$kb
    fi
  done
}
measure "authors' pipeline (PyTorch, fp32)" $py "$src/bench/reference/infer_reference.py" \
  --case "$case_dir" "${ref_args[@]}" --flips 4 --reps 1 --threads "$threads"
measure "kdseg predict (defaults)" "$kdseg" predict "${kdseg_args[@]}" --in "$case_dir" \
  --out "$out/pred" "${post[@]}"
precision=$($py -c "import json;print(json.load(open('$out/pred/config.json'))['resolved']['precision'])")
measure "kdseg predict --precision fp32" "$kdseg" predict "${kdseg_args[@]}" --in "$case_dir" \
  --out "$out/pred" "${post[@]}" --precision fp32
names=("authors' pipeline (PyTorch, fp32)" "kdseg predict (defaults)" "kdseg predict --precision fp32")
if [[ $what == student ]]; then  # the teachers run through LibTorch anyway
  measure "  ... --engine torch (LibTorch)" "$kdseg" predict "${kdseg_args[@]}" --in "$case_dir" \
    --out "$out/pred" "${post[@]}" --precision fp32 --engine torch
  names+=("  ... --engine torch (LibTorch)")
fi
ref=${best_s["authors' pipeline (PyTorch, fp32)"]}
echo
echo "${models[*]}: best of $reps, $threads thread(s); the default resolved to $precision here"
for name in "${names[@]}"; do
  printf '%-34s %6.2f s  %5.2f GB  %5.2fx the authors'"'"' pipeline\n' "$name" "${best_s[$name]}" \
    "$(awk "BEGIN{print ${best_kb[$name]}/1048576}")" "$(awk "BEGIN{print $ref/${best_s[$name]}}")"
done
