#!/usr/bin/env bash
# bench/engine_choice.sh — what `--engine auto` should pick on this CPU: whole `kdseg predict`
# processes of one synthetic case, `--engine torch` (LibTorch) against `--engine onednn`
# (kdseg's oneDNN engine), alternated run by run in this one command, for every network the
# oneDNN engine runs (student, unet, resunet-vae), at two sizes:
#   paper: the paper-size networks on a 1 mm case (brain box ~176x208x152), 4 X/Y flips;
#   cpu:   the default experiment's networks (`reproduce --preset cpu`, widths 8-64) on a 3 mm case,
#          no flips, as reproduce predicts.
# Prints each run, then per network and size the best of REPS for each engine and the ratio
# torch / onednn (above 1: oneDNN is faster). Checkpoints after one training step (speed does not
# depend on the weights). The CPU's flags are printed first: a figure names its CPU.
#
#   bench/engine_choice.sh [BUILD_DIR]      REPS (2), THREADS (all cores), PRECISION (fp32),
#                                           SIZES ("paper cpu"), OUT (BUILD_DIR/bench_engine)
# About 8 minutes on a 2-core AVX2 machine with the defaults.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${OUT:-$build/bench_engine}
reps=${REPS:-2}
threads=${THREADS:-$(nproc)}
precision=${PRECISION:-fp32}
sizes=${SIZES:-paper cpu}
kdseg=${KDSEG:-$build/kdseg}
[[ -x $kdseg ]] || { echo "engine_choice.sh: $kdseg is missing: build first" >&2; exit 2; }
mkdir -p "$out"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
isa=$(grep -m1 flags /proc/cpuinfo | grep -o -w -E 'avx512f|avx512_bf16|amx_bf16|avx2' | sort -u | tr '\n' ' ')
echo "ISA flags: $isa; $threads thread(s); precision $precision"

declare -A best
for size in $sizes; do
  spacing=1 flags=(--tta xy)
  [[ $size == cpu ]] && spacing=3 flags=(--tta none --window whole)
  cohort=$out/cohort-$size
  [[ -d $cohort/labeled ]] || "$kdseg" synth --out "$cohort" --labeled 1 --unlabeled 0 --test 0 \
    --spacing "$spacing" --seed 1 --quiet >/dev/null
  for arch in student unet resunet-vae; do
    run=$out/run-$size-$arch
    opts=()
    if [[ $size == cpu ]]; then
      case $arch in
        student) opts=(--model-options '{"widths":[8,16,32,64],"norm_groups":4}') ;;
        unet) opts=(--model-options '{"widths":[8,16,32,64]}') ;;
        resunet-vae) opts=(--model-options '{"widths":[8,16,32,64],"norm_groups":8,"vae_latent":16,"vae_channels":4}') ;;
      esac
      opts+=(--patch 48,48,48)
    fi
    [[ -f $run/checkpoints/last.pt ]] || "$kdseg" train --data "$cohort/labeled" --out "$run" \
      --model "$arch" "${opts[@]}" --steps 1 --val-every 0 --threads "$threads" --quiet >/dev/null
    for ((r = 1; r <= reps; r++)); do
      for engine in torch onednn; do
        rm -rf "$out/pred"
        /usr/bin/time -f "%e %M" -o "$out/time.txt" "$kdseg" predict --model \
          "$run/checkpoints/last.pt" --in "$cohort/labeled" --out "$out/pred" "${flags[@]}" \
          --precision "$precision" --engine "$engine" --threads "$threads" --quiet \
          >/dev/null 2>"$out/stderr.txt" || { cat "$out/stderr.txt" >&2; exit 1; }
        read -r s kb <"$out/time.txt"
        printf '%-6s %-12s %-7s run %d: %7.2f s  %5.2f GiB\n' "$size" "$arch" "$engine" "$r" "$s" \
          "$(awk "BEGIN{print $kb/1048576}")"
        key="$size $arch $engine"
        if [[ -z ${best[$key]:-} ]] || awk "BEGIN{exit !($s < ${best[$key]})}"; then
          best[$key]=$s
        fi
      done
    done
  done
done
echo
echo "best of $reps (whole process, s); torch/onednn above 1: oneDNN faster"
for size in $sizes; do
  for arch in student unet resunet-vae; do
    t=${best["$size $arch torch"]} o=${best["$size $arch onednn"]}
    printf '%-6s %-12s torch %7.2f  onednn %7.2f  torch/onednn %5.2f\n' "$size" "$arch" "$t" "$o" \
      "$(awk "BEGIN{print $t/$o}")"
  done
done
