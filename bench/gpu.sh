#!/usr/bin/env bash
# bench/gpu.sh — issue 9, part 4: on a CUDA machine with a pip PyTorch 2.x, CMake and ninja (no apt,
# no internet), build kdseg against that PyTorch's LibTorch, run the LibTorch unit tests with CUDA
# available, and time kdseg's training step and per-case inference against the same network in
# Python PyTorch eager (bench/reference/*.py) on the same GPU, fp32 and bf16 autocast.
#
#   bench/gpu.sh [DEPS_ROOT]
#
# DEPS_ROOT (default build/gpu_deps/root) holds the non-torch dependencies, made on the Debian
# development machine by bench/gpu_deps.sh: Debian's .deb files unpacked with dpkg -x (headers,
# static libdeflate.a / libz.a / libgtest.a, CMake configs) and the Colin27 templates for synth.
# Environment: OUT (results folder; default build-gpu/out), PYTHON (python3), JOBS (16),
# BUDGET_S (480: a benchmark that would start later than this many seconds after the start is
# skipped, so that the whole run stays under ~9 minutes on an H100), BUILD_DIR (build-gpu),
# DRY_RUN=1 (configure only, then stop: how the paths were checked on the CPU machine, e.g.
# DRY_RUN=1 BUILD_DIR=/work/build_gpu_dry PYTHON=/usr/bin/python3 bench/gpu.sh).
#
# The C++ side is run by name, when those targets exist (skipped with a message otherwise):
#   bench_train_step --device cuda [--bf16] --patch 128 --batch 2 --json FILE
#   bench_infer      --device cuda [--bf16] --case DIR --flips 4 --reps 3 --json FILE
# Their JSON should use the reference's keys: step_s_median / step_s_best, cuda_max_allocated_gb
# (training); case_s_median / case_s_best, forward_s_median / forward_s_best, peak_rss_gb,
# cuda_max_allocated_gb (inference).
#
# Results in $OUT (at most 8 files, none in sub-folders): results.json (every figure and each
# step's status), table.txt (the table printed at the end), build.log, tests.log, bench.log.
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
deps=$(cd "${1:-$src/build/gpu_deps/root}" 2>/dev/null && pwd) ||
  { echo "gpu.sh: no dependency folder ${1:-$src/build/gpu_deps/root} (make it with bench/gpu_deps.sh)" >&2; exit 2; }
build=${BUILD_DIR:-$src/build-gpu}
OUT=${OUT:-$build/out}
PY=${PYTHON:-python3}
JOBS=${JOBS:-16}
BUDGET_S=${BUDGET_S:-480}
HARD_S=${HARD_S:-560}  # no step runs past this many seconds (the device tool's limit is 600)
work=$build/bench_work
mkdir -p "$OUT" "$work/json"
rm -f "$work"/json/*.json "$work/status.tsv"
: >"$OUT/build.log"; : >"$OUT/tests.log"; : >"$OUT/bench.log"
export PYTHONUNBUFFERED=1  # benchmark output reaches the logs even when a step is cut off
SECONDS=0

say() { printf '[gpu.sh %4ds] %s\n' "$SECONDS" "$*"; }
# status NAME STATE SECONDS NOTE → one line of status.tsv, read into results.json
status() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$work/status.tsv"; }
# run_step NAME TIMEOUT LOG CMD...: runs CMD with a time limit, its output appended to LOG; shown
# whole when SHOW=all (the benchmarks), else its last 25 lines (configure, build, tests)
SHOW=tail
run_step() {
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$SECONDS rc step_log=$work/step.log
  say "$name: $*"
  echo "=== $name: $*" >>"$log"
  if [[ $SHOW == all ]]; then
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$step_log"; rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=10 "$limit" "$@" >"$step_log" 2>&1; rc=$?
    tail -n 25 "$step_log"
  fi
  cat "$step_log" >>"$log"
  local state=ok
  [[ $rc -eq 124 || $rc -eq 137 ]] && state="timeout (${limit}s)"
  [[ $rc -ne 0 && $state == ok ]] && state="failed (exit $rc)"
  status "$name" "$state" "$((SECONDS - t0))" ""
  say "$name: $state in $((SECONDS - t0)) s"
  return "$rc"
}
# left LIMIT: LIMIT, or less so as to end by HARD_S
left() { local l=$((HARD_S - SECONDS)); ((l < 1)) && l=1; ((l < $1)) && echo "$l" || echo "$1"; }
# bench NAME TIMEOUT CMD...: run_step into bench.log, unless the time budget is spent
bench() {
  local name=$1
  if ((SECONDS > BUDGET_S || HARD_S - SECONDS < 20)); then
    say "$name: skipped, ${SECONDS}s > BUDGET_S=${BUDGET_S}s"
    status "$name" "skipped (time budget)" 0 ""
    return 0
  fi
  SHOW=all run_step "$name" "$(left "$2")" "$OUT/bench.log" "${@:3}"
}

# ---------------------------------------------------------------- (a) the machine and its LibTorch
say "environment"
command -v nvcc >/dev/null || for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
  [[ -x $d/nvcc ]] && export PATH=$d:$PATH && break
done
{ nvidia-smi -L; nvcc --version | tail -1; cmake --version | head -1; echo "ninja $(ninja --version)";
  c++ --version | head -1; } 2>&1 | tee "$work/env.txt"
# One Python start (importing torch takes seconds): cmake prefix, compute capability, versions.
torch_info=$("$PY" -c 'import torch
print(torch.utils.cmake_prefix_path)
print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "")
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "cxx11abi", torch.compiled_with_cxx11_abi())') || { echo "gpu.sh: $PY cannot import torch" >&2; exit 2; }
torch_prefix=$(sed -n 1p <<<"$torch_info")
torch_lib=$(cd "$torch_prefix/../../lib" 2>/dev/null && pwd)  # site-packages/torch/lib
cap=$(sed -n 2p <<<"$torch_info")
sed -n 3p <<<"$torch_info" | tee -a "$work/env.txt"
[[ -n $cap ]] || say "WARNING: torch sees no CUDA device; the benchmarks will fail"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-${cap:-9.0}}

# ---------------------------------------------------------------- (b, c) configure and build
lib=$deps/usr/lib/x86_64-linux-gnu
configure=(cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=$torch_prefix;$deps/usr"
  -DKDSEG_BUILD_TESTS=ON -DKDSEG_BUILD_BENCH=ON
  # The dependencies from DEPS_ROOT, named exactly (found there even where CMake does not search
  # lib/x86_64-linux-gnu, and never mixed with a system copy); static archives, so no
  # LD_LIBRARY_PATH is needed to run.
  "-Dnlohmann_json_DIR=$deps/usr/share/cmake/nlohmann_json"
  "-DCLI11_DIR=$deps/usr/share/cmake/CLI11"
  "-DGTest_DIR=$lib/cmake/GTest"
  "-DZLIB_INCLUDE_DIR=$deps/usr/include" "-DZLIB_LIBRARY=$lib/libz.a"
  "-DKDSEG_DEFLATE_INCLUDE=$deps/usr/include" "-DKDSEG_DEFLATE_LIBRARY=$lib/libdeflate.a")
# LibTorch's CMake config finds the CUDA toolkit through nvcc (CUDACXX, else PATH).
command -v nvcc >/dev/null && export CUDACXX=${CUDACXX:-$(command -v nvcc)}
if ! run_step configure 180 "$OUT/build.log" "${configure[@]}"; then
  say "configure failed: see $OUT/build.log"; build_failed=1
elif [[ ${DRY_RUN:-0} == 1 ]]; then
  grep -E 'kdseg: LibTorch|ZLIB|nlohmann|CLI11|GTest|DEFLATE' "$build/CMakeCache.txt" | grep -v '^//' |
    grep -E '_DIR:|_LIBRARY:|_INCLUDE[A-Z_]*:' | tee -a "$OUT/build.log"
  say "DRY_RUN=1: configured in $build; stopping before the build"
  exit 0
else
  build_failed=0
  targets=(kdseg kdseg_torch_tests)
  all_targets=$(ninja -C "$build" -t targets all 2>/dev/null | cut -d: -f1)
  for t in bench_train_step bench_infer; do
    if grep -qx "$t" <<<"$all_targets"; then targets+=("$t"); else
      say "$t: no such target yet (bench/CMakeLists.txt); its benchmarks will be skipped"; fi
  done
  run_step build "$(left 400)" "$OUT/build.log" ninja -C "$build" -j"$JOBS" "${targets[@]}" || build_failed=1
fi

# ---------------------------------------------------------------- (d) unit tests, CUDA available
if [[ $build_failed == 0 ]]; then
  # Which libstdc++ the test program binds to: it must need libstdc++.so.6 before libtorch (see
  # cmake/dependencies.cmake), because this LibTorch exports std::filesystem symbols of its own.
  { echo "needed by kdseg_torch_tests (first 3): $(readelf -d "$build/tests/kdseg_torch_tests" 2>/dev/null |
      grep -o 'Shared library: \[[^]]*\]' | head -3 | sed 's/Shared library: //' | tr '\n' ' ')"
    echo "std::filesystem symbols exported by libtorch_cpu.so: $(nm -D --defined-only \
      "$torch_lib/libtorch_cpu.so" 2>/dev/null | grep -c '_ZNSt10filesystem')"; } | tee -a "$work/env.txt"
  # Only kdseg_torch_tests is built: ctest lists the others as *_NOT_BUILT; the cohort fixture and
  # the bench smoke runs that need it are left out (the benchmarks below run for real). The tests
  # with CUDA parts (Models/EveryArch.CudaGivesTheCpuLogitsAndGradients/*, FastPath.*) run them
  # here. 8 processes of 2 threads each: 16 of 16 at a time oversubscribed the cores 16-fold.
  (cd "$build" && OMP_NUM_THREADS=2 run_step tests "$(left 200)" "$OUT/tests.log" ctest -j8 \
    --timeout 150 -E '_NOT_BUILT|make_test_cohort|_smoke' --output-on-failure) || true
  grep -E 'tests passed|tests failed|\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run' \
    "$OUT/tests.log" | tail -20 >"$work/tests_summary.txt"
  grep -E 'Cuda|FastPath' "$OUT/tests.log" | grep -E 'Passed|Failed|Exception|Timeout' >>"$work/tests_summary.txt"
  # A crashed test: its stack, from cuda-gdb (the machine's only debugger), into tests.log.
  crashed=$(grep -m1 -oE 'Test +#[0-9]+: [^ ]+ \.+\*\*\*Exception: SegFault' "$OUT/tests.log" |
    sed -E 's/Test +#[0-9]+: ([^ ]+) .*/\1/')
  if [[ -n $crashed ]] && command -v cuda-gdb >/dev/null && ((HARD_S - SECONDS > 200)); then
    run_step "backtrace $crashed" 60 "$OUT/tests.log" cuda-gdb -batch -ex run -ex bt \
      --args "$build/tests/kdseg_torch_tests" "--gtest_filter=$crashed" || true
  fi
fi

# ---------------------------------------------------------------- (e) benchmarks
case_dir=
if [[ $build_failed == 0 ]]; then
  rm -rf "$work/cohort"
  if run_step synth 120 "$OUT/bench.log" "$build/kdseg" synth --out "$work/cohort" --labeled 1 \
       --unlabeled 0 --test 0 --spacing 1 --seed 1 --threads "$JOBS" --quiet \
       --templates "$deps/usr/share/mricron/templates"; then
    case_dir=$work/cohort/labeled/SYN_L0001
  fi
fi
case_args=(); [[ -n $case_dir ]] && case_args=(--case "$case_dir")
[[ -z $case_dir ]] && say "no synthetic case: the Python reference uses its 240x240x155 phantom, bench_infer is skipped"

ref=$src/bench/reference
for prec in fp32 bf16; do
  flag=(); [[ $prec == bf16 ]] && flag=(--bf16)
  bench "py_train_$prec" 120 "$PY" "$ref/train_reference.py" --what train --device cuda "${flag[@]}" \
    --patch 128 --batch 2 --warmup 3 --steps 10 --threads "$JOBS" --json "$work/json/py_train_$prec.json"
  if [[ -x $build/bench/bench_train_step ]]; then
    bench "cpp_train_$prec" 120 "$build/bench/bench_train_step" --device cuda "${flag[@]}" \
      --patch 128 --batch 2 --json "$work/json/cpp_train_$prec.json"
  else
    status "cpp_train_$prec" "skipped (no bench_train_step)" 0 ""
  fi
  bench "py_infer_$prec" 150 "$PY" "$ref/infer_reference.py" "${case_args[@]}" --device cuda "${flag[@]}" \
    --flips 4 --reps 3 --warmup 1 --threads "$JOBS" --json "$work/json/py_infer_$prec.json"
  if [[ -x $build/bench/bench_infer && -n $case_dir ]]; then
    bench "cpp_infer_$prec" 150 "$build/bench/bench_infer" --device cuda "${flag[@]}" \
      --case "$case_dir" --flips 4 --reps 3 --json "$work/json/cpp_infer_$prec.json"
    # The same with one flip per forward pass (the flips not fused): less GPU memory, as Python.
    bench "cpp_infer_seq_$prec" 150 "$build/bench/bench_infer" --device cuda "${flag[@]}" \
      --variant plain --case "$case_dir" --flips 4 --reps 3 --json "$work/json/cpp_infer_seq_$prec.json"
  else
    status "cpp_infer_$prec" "skipped (no bench_infer$([[ -z $case_dir ]] && echo ' or no case'))" 0 ""
  fi
done
# The reference loader's augmented sample (CPU, one thread): what a loader thread must beat.
bench py_aug 90 "$PY" "$ref/train_reference.py" --what aug "${case_args[@]}" --aug-samples 2 \
  --json "$work/json/py_aug.json"

# ---------------------------------------------------------------- (f) the whole method on CUDA
# `kdseg reproduce` as the end-to-end test runs it (tiny preset, a 3 mm cohort of 3 labelled,
# 2 unlabelled, 2 test cases, 1 seed), on the GPU: every stage, train to report tables.
if [[ $build_failed == 0 ]]; then
  rm -rf "$work/tiny_cohort" "$work/tiny_run"
  if bench tiny_cohort 60 "$build/kdseg" synth --out "$work/tiny_cohort" --labeled 3 --unlabeled 2 \
       --test 2 --spacing 3 --seed 11 --quiet --templates "$deps/usr/share/mricron/templates"; then
    bench reproduce_cuda 200 "$build/kdseg" reproduce --preset tiny --seeds 1 --cohort "$work/tiny_cohort" \
      --teacher-steps 80 --student-steps 40 --device cuda --no-report --out "$work/tiny_run"
    [[ -f $work/tiny_run/results.json ]] && cp "$work/tiny_run/results.json" "$work/json/reproduce_cuda.json"
    # The same on this machine's CPU (same seed and cohort): whether a network that learns little
    # on CUDA (session 4: the UNet, WT 0.21 against ~0.7 on the development machine's CPU) does so
    # on the CPU here too. Each teacher's training log of both runs goes to bench.log.
    rm -rf "$work/tiny_run_cpu"
    bench reproduce_cpu 200 "$build/kdseg" reproduce --preset tiny --seeds 1 --cohort "$work/tiny_cohort" \
      --teacher-steps 80 --student-steps 40 --device cpu --threads "$JOBS" --no-report --out "$work/tiny_run_cpu"
    [[ -f $work/tiny_run_cpu/results.json ]] && cp "$work/tiny_run_cpu/results.json" "$work/json/reproduce_cpu.json"
    for run in tiny_run tiny_run_cpu; do
      for log in "$work/$run"/seed1/runs/*/log.csv; do
        [[ -f $log ]] && { echo "=== $run ${log#"$work/$run/"}"; cat "$log"; } >>"$OUT/bench.log"
      done
    done
  fi
fi

# ---------------------------------------------------------------- results.json + table
"$PY" - "$work" "$OUT" "$SECONDS" <<'EOF'
import glob, json, os, sys
work, out, wall = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {"wall_s": wall, "steps": {}, "figures": {}}
if os.path.exists(os.path.join(work, "env.txt")):
    res["environment"] = open(os.path.join(work, "env.txt")).read().splitlines()
if os.path.exists(os.path.join(work, "tests_summary.txt")):
    res["tests"] = open(os.path.join(work, "tests_summary.txt")).read().splitlines()
if os.path.exists(os.path.join(work, "status.tsv")):
    for line in open(os.path.join(work, "status.tsv")):
        name, state, secs, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
        res["steps"][name] = {"status": state, "seconds": int(secs or 0)}
for p in sorted(glob.glob(os.path.join(work, "json", "*.json"))):
    try:
        res["figures"][os.path.basename(p)[:-5]] = json.load(open(p))
    except ValueError as e:
        res["figures"][os.path.basename(p)[:-5]] = {"error": "unreadable JSON: %s" % e}

def get(name, section, *keys):
    d = res["figures"].get(name, {})
    d = d.get(section, d) if section else d
    for k in keys:
        if isinstance(d.get(k), (int, float)):
            return float(d[k])
    return None

def fmt(v, unit=""):
    return "-" if v is None else ("%.3f%s" % (v, unit))

def ratio(py, cpp):
    return "-" if py is None or cpp is None or cpp == 0 else "%.2fx" % (py / cpp)

rows = []
for prec in ("fp32", "bf16"):
    py, cpp = "py_train_" + prec, "cpp_train_" + prec
    t_py, t_cpp = get(py, "train", "step_s_median", "step_s_best"), get(cpp, "train", "step_s_median", "step_s_best")
    rows.append(("train 128^3 b2 %s  s/step" % prec, fmt(t_py), fmt(t_cpp), ratio(t_py, t_cpp),
                 fmt(get(py, "train", "cuda_max_allocated_gb")), fmt(get(cpp, "train", "cuda_max_allocated_gb"))))
for prec in ("fp32", "bf16"):
    py, cpp = "py_infer_" + prec, "cpp_infer_" + prec
    c_py, c_cpp = get(py, None, "case_s_median", "case_s_best"), get(cpp, None, "case_s_median", "case_s_best")
    f_py, f_cpp = get(py, None, "forward_s_median", "forward_s_best"), get(cpp, None, "forward_s_median", "forward_s_best")
    m_py, m_cpp = get(py, None, "cuda_max_allocated_gb"), get(cpp, None, "cuda_max_allocated_gb")
    rows.append(("infer case 4 flips %s  s/case" % prec, fmt(c_py), fmt(c_cpp), ratio(c_py, c_cpp), fmt(m_py), fmt(m_cpp)))
    rows.append(("infer %s  s/forward pass" % prec, fmt(f_py), fmt(f_cpp), ratio(f_py, f_cpp), "", ""))
    seq = "cpp_infer_seq_" + prec
    c_seq = get(seq, None, "case_s_median", "case_s_best")
    rows.append(("infer case 4 flips %s one flip/pass  s/case" % prec, fmt(c_py), fmt(c_seq), ratio(c_py, c_seq),
                 fmt(m_py), fmt(get(seq, None, "cuda_max_allocated_gb"))))
a = get("py_aug", "aug", "sample_s_median", "sample_s_best")
rows.append(("aug 144x144x128 1 thread  s/sample", fmt(a), "-", "-", "", ""))
head = ("figure", "Python eager", "kdseg", "speed-up", "Py GPU GB", "kdseg GPU GB")
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
lines = ["  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) for r in [head] + rows]
env = res.get("environment", [])
lines = ["kdseg GPU benchmark (%s); medians; speed-up = Python / kdseg; total %d s" % (
    "; ".join(l for l in env if l.startswith(("GPU", "torch"))), wall)] + lines
lines += ["steps: " + ", ".join("%s %s (%ds)" % (k, v["status"], v["seconds"]) for k, v in res["steps"].items())]
summary = [l for l in res.get("tests", []) if "tests passed" in l] or res.get("tests") or ["not run"]
lines += ["tests: " + summary[-1]]
for dev in ("cuda", "cpu"):
    rep = res["figures"].get("reproduce_" + dev)
    if rep and isinstance(rep.get("table"), dict):
        t = rep["table"]
        lines += ["reproduce --preset tiny on %s (1 seed, 2 test cases), %.0f s; Dice ET/WT/TC: " % (dev.upper(), rep.get("wall_seconds", -1))
                  + "; ".join("%s %.2f/%.2f/%.2f" % (m, t[m]["dice_et"]["mean"], t[m]["dice_wt"]["mean"], t[m]["dice_tc"]["mean"])
                              for m in rep.get("methods", []) if m in t)]
res["table"] = lines
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=2)
open(os.path.join(out, "table.txt"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
say "done; results in $OUT (results.json, table.txt, build.log, tests.log, bench.log)"
[[ $build_failed == 0 ]]
