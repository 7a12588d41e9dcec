#!/usr/bin/env bash
# bench/cpu.sh — the CPU figures of kdseg's inference and training (docs/speed.md), each
# against the Python reference of the same pipeline (bench/reference/*.py on Debian's
# python3-torch) run in this same command, on the same synthetic 1 mm case:
#   0. the defaults first: whole `kdseg predict` processes against the authors'-style pipeline
#      (bench/predict_default.sh: defaults, --precision fp32, --engine torch; SKIP_DEFAULT=1
#      leaves it out);
#   1. per-case inference of the paper-size student with the 4 X/Y-flip TTA
#      (infer_reference.py against bench_infer's variants);
#   2. one augmented 144x144x128 training sample on one thread
#      (train_reference.py --what aug against bench_train_step's make_sample);
#   3. one training step of the student on a 144x144x128 patch, batch 1
#      (train_reference.py --what train against bench_train_step, fp32 and bf16).
#
#   bench/cpu.sh [BUILD_DIR]        REPS (3) timed cases/steps, THREADS (all cores), VARIANTS
#                                   (bench_infer's default set; e.g. plain,bf16,bf16-fused), OUT
#                                   (BUILD_DIR/bench_out): JSON of every program + summary.txt
# With REPS=1 and three variants it takes about 20 minutes on a 2-core machine (the fp32
# passes dominate); `ninja bench` is the quick form (no Python, 1 round).
# SKIP_PY_INFER=1 reuses OUT/py_infer.json from an earlier run (the slowest step).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${OUT:-$build/bench_out}
reps=${REPS:-3}
threads=${THREADS:-$(nproc)}
py=/usr/bin/python3
export PYTHONUNBUFFERED=1
mkdir -p "$out"
for exe in kdseg bench/bench_infer bench/bench_train_step; do
  [[ -x $build/$exe ]] || { echo "cpu.sh: $build/$exe is missing: build first" >&2; exit 2; }
done
$py -c 'import torch' 2>/dev/null || { echo "cpu.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }

if [[ ${SKIP_DEFAULT:-0} != 1 ]]; then
  echo "== 0. the defaults against the authors' pipeline (bench/predict_default.sh)"
  OUT=$build/bench_predict bash "$src/bench/predict_default.sh" "$build" student |
    tee "$out/predict_default.txt"
fi

case_dir=$out/cohort/labeled/SYN_L0001
if [[ ! -d $case_dir ]]; then
  echo "== a synthetic 1 mm case"
  "$build/kdseg" synth --out "$out/cohort" --labeled 1 --unlabeled 0 --test 0 --spacing 1 --seed 1 --quiet
fi
step() { echo; echo "== $*"; "$@"; }
[[ ${SKIP_PY_INFER:-0} == 1 && -f $out/py_infer.json ]] ||
  step $py "$src/bench/reference/infer_reference.py" --case "$case_dir" --flips 4 --reps "$reps" \
  --threads "$threads" --json "$out/py_infer.json"
step "$build/bench/bench_infer" --case "$case_dir" --flips 4 --reps "$reps" --threads "$threads" \
  ${VARIANTS:+--variants "$VARIANTS"} --json "$out/infer.json"
step $py "$src/bench/reference/train_reference.py" --what aug --case "$case_dir" \
  --aug-samples "$reps" --json "$out/py_aug.json"
step $py "$src/bench/reference/train_reference.py" --what train --threads "$threads" \
  --steps "$reps" --json "$out/py_train.json"
step "$build/bench/bench_train_step" --case "$case_dir" --steps "$reps" --aug-samples "$((reps + 1))" \
  --threads "$threads" --json "$out/train_step.json"

# The summary: kdseg against the Python reference measured above (ratios of medians).
$py - "$out" <<'EOF' | tee "$out/summary.txt"
import json, sys, os
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
pi, ki, pa, pt, kt = (load(n) for n in
                      ("py_infer.json", "infer.json", "py_aug.json", "py_train.json", "train_step.json"))
print("\nkdseg against the Python reference (same machine, same command; medians)")
ref = pi["case_s_median"]
print("inference, paper-size student, 4 flips, one 1 mm case: Python %.2f s/case, peak RSS %.2f GB"
      % (ref, pi["peak_rss_gb"]))
for name, v in ki["variants"].items():
    dice = ("min Dice vs plain %.4f" % min(v["dice_wt"], v["dice_tc"], v["dice_et"])
            if "dice_wt" in v else "")
    print("  kdseg %-14s %7.2f s/case  %5.2fx the reference  peak RSS %5.2f GB  %s"
          % (name, v["case_s_median"], ref / v["case_s_median"], v.get("peak_rss_gb", -1), dice))
a_ref = pa["aug"]["sample_s_median"]
a = kt["aug"]
print("augmented 144x144x128 sample, 1 thread: Python %.3f s; kdseg %.3f s (%.1fx); kdseg's "
      "former grid_sample path %.3f s" % (a_ref, a["sample_s_median"], a_ref / a["sample_s_median"],
                                          a["grid_sample_s_median"]))
t_ref = pt["train"]["step_s_median"]
print("training step, student, 144x144x128, batch 1: Python fp32 %.2f s (peak RSS %.2f GB)"
      % (t_ref, pt.get("peak_rss_gb", -1)))
for name in ("fp32", "bf16"):
    v = kt.get("train_" + name)
    if v is None:
        continue
    print("  kdseg %-5s %.2f s  %.2fx the reference  peak RSS %.2f GB"
          % (name, v["step_s_median"], t_ref / v["step_s_median"], v.get("peak_rss_gb", -1)))
EOF
