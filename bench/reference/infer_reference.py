#!/usr/bin/python3
"""The authors'-style inference of the paper-size student on one 240×240×155 case, in plain PyTorch
eager: the in-run baseline of issue 9 (CPU with Debian's python3-torch 1.13; GPU with pip 2.x).
With several --checkpoint (any kdseg architecture, e.g. the three teachers), the models run one
after another, each with its own flips, and their probabilities are averaged: what labelling a
case with the teachers costs in the authors' style (issue 22).

Per case: read the four modalities → crop to the brain's bounding box (non-zero in any modality)
→ pad each side to a multiple of 16 with zeros → z-score each modality over its non-zero voxels,
background 0 → whole-volume forward passes, one per flip (4: none, X, Y, XY as the authors; 1: none;
8: all of X, Y, Z), sigmoid, flips undone and averaged → threshold 0.5 → regions to labels
(WT→2, TC→1, ET→4) → connected components of the tumour smaller than 10 % of it removed (scipy;
skipped and said so without it) → labels put back on the 240×240×155 grid.

Prints seconds per case, per forward pass and the stages, and the peak memory; --json writes them.
Weights are random unless --checkpoint names a kdseg checkpoint (the timing is the same). A
student is built by ./student.py (the authors' model.py); the other architectures by kdseg's
Python package (python/kdseg, plain PyTorch modules mirroring the C++ ones).

  /usr/bin/python3 bench/reference/infer_reference.py --case COHORT/labeled/SYN_L0001 --threads 2
  python3 bench/reference/infer_reference.py --case DIR --device cuda --bf16 --reps 3 --json out.json
"""
import argparse
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from student import Student, load_kdseg_checkpoint, model_config  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

FLIPS = {1: [()], 4: [(), (2,), (3,), (2, 3)],  # dims of (B,C,X,Y,Z)
         8: [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]}


def parse_shape(text):
    return tuple(int(v) for v in text.replace("x", ",").split(","))


def load_model(path):
    """The network of a kdseg checkpoint: ./student.py's Student for a student, else kdseg's
    Python package's module of that architecture."""
    from kdseg.checkpoint import read_checkpoint, load
    if read_checkpoint(path)["arch"] == "student":
        return load_kdseg_checkpoint(path)
    return load(path)[0]


def conv_flops(model, shape):
    """FLOPs (2 per multiply-add) of the convolutions of one forward pass on a (1,4,*shape) input:
    counted with hooks on an s³ input (s: 16 or the model's stride) and scaled by the voxel ratio
    (exact: every layer's output size is proportional when the sides are multiples of s)."""
    total = [0]

    def hook(m, inp, out):
        k = m.weight.shape[2] * m.weight.shape[3] * m.weight.shape[4]
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    side = max(16, model.stride())
    with torch.no_grad():
        model(torch.zeros(1, 4, side, side, side, device=next(model.parameters()).device))
    for h in hs:
        h.remove()
    return total[0] * (shape[0] * shape[1] * shape[2]) / side ** 3


def brain_box(img):
    """Bounding box (lo, hi) per spatial axis of voxels non-zero in any modality."""
    mask = (img != 0).any(0)
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = torch.nonzero(mask.any(other[1]).any(other[0]))  # the higher dim first
        box.append((int(idx[0]), int(idx[-1]) + 1))
    return box


def preprocess(img, mult=16):
    """Crop to the brain, pad to a multiple of `mult` (centred, zeros), z-score over non-zero."""
    box = brain_box(img)
    crop = img[:, box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]
    pads, padded = [], []
    for ax in range(3):
        n = crop.shape[1 + ax]
        m = int(math.ceil(n / mult)) * mult
        lo = (m - n) // 2
        pads.append((lo, m - n - lo))
        padded.append(m)
    x = F.pad(crop, [p for ax in (2, 1, 0) for p in pads[ax]])  # F.pad lists the last dim first
    mask = x != 0
    n = mask.sum((1, 2, 3)).clamp(min=1).double()
    mean = (x.double() * mask).sum((1, 2, 3)) / n
    var = ((x.double() - mean.view(4, 1, 1, 1)) ** 2 * mask).sum((1, 2, 3)) / n
    std = var.sqrt().clamp(min=1e-8)
    x = ((x - mean.view(4, 1, 1, 1).float()) / std.view(4, 1, 1, 1).float()) * mask
    return x.contiguous(), box, pads, padded


def regions_to_labels(binary):
    """(3,X,Y,Z) bool WT, TC, ET → uint8 labels 0/2/1/4 (WT→2, then TC→1, then ET→4)."""
    lab = torch.zeros(binary.shape[1:], dtype=torch.uint8)
    lab[binary[0]] = 2
    lab[binary[1]] = 1
    lab[binary[2]] = 4
    return lab


def remove_small_components(lab, frac=0.1):
    """Zero tumour components smaller than `frac` of the tumour volume; None if no scipy."""
    try:
        import numpy as np
        from scipy import ndimage
    except ImportError:
        return None
    a = lab.numpy()
    comps, n = ndimage.label(a > 0)
    if n > 1:
        sizes = np.bincount(comps.ravel())
        sizes[0] = 0
        small = sizes < frac * sizes.sum()
        a[small[comps]] = 0
    return n


def run_case(args, model, dev, case_dir, stats):
    t = {}
    with common.Timer(dev) as tm:
        img = common.read_case(case_dir) if case_dir else common.phantom_case(args.phantom_shape)
    t["read_s"] = tm.s
    models = model if isinstance(model, list) else [model]
    with common.Timer(dev) as tm:
        x, box, pads, padded = preprocess(img, max([16] + [m.stride() for m in models]))
        x = x.unsqueeze(0).to(dev)  # (1,4,X,Y,Z)
    t["preprocess_s"] = tm.s
    fwd = []
    prob = None
    with torch.no_grad(), common.autocast(dev, args.bf16):
        for m in models:  # one after another, each with its own flips
            for dims in FLIPS[args.flips]:
                xi = x.flip(dims) if dims else x
                with common.Timer(dev) as tm:
                    logits = m(xi)
                fwd.append(tm.s)
                p = torch.sigmoid(logits.float())
                p = p.flip(dims) if dims else p
                prob = p if prob is None else prob + p
    t["forward_s"] = fwd
    with common.Timer(dev) as tm:
        prob = prob[0] / (len(FLIPS[args.flips]) * len(models))
        binary = (prob > 0.5).cpu()
        lab = regions_to_labels(binary)
        sl = tuple(slice(p[0], p[0] + (b[1] - b[0])) for p, b in zip(pads, box))
        lab = lab[sl].contiguous()
        n_comp = remove_small_components(lab) if args.components else None
        out = torch.zeros(img.shape[1:], dtype=torch.uint8)
        out[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]] = lab
    t["postprocess_s"] = tm.s
    t["case_s"] = t["read_s"] + t["preprocess_s"] + sum(fwd) + t["postprocess_s"]
    stats.update(shape=list(img.shape[1:]), crop=[b[1] - b[0] for b in box], padded=padded,
                 components="skipped (no scipy)" if args.components and n_comp is None
                 else (n_comp if args.components else "off"),
                 label_voxels={str(k): int((out == k).sum()) for k in (1, 2, 4)})
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", help="BraTS 2018-2021 case folder (<ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz); "
                                   "default: a 240x240x155 phantom")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="kdseg checkpoint, any architecture; repeat for an ensemble run one model "
                         "after another (default: a student with random weights)")
    ap.add_argument("--model-config", default=None,
                    help='student options as JSON, or "tiny" (widths 8,8,16,16, GroupNorm 4); default: paper size')
    ap.add_argument("--phantom-shape", type=parse_shape, default=(240, 240, 155),
                    help="phantom size without --case, e.g. 64,64,48 for a quick check")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GroupNorm stays fp32)")
    ap.add_argument("--flips", type=int, default=4, choices=sorted(FLIPS), help="test-time flips")
    ap.add_argument("--reps", type=int, default=1, help="timed cases (the same case again)")
    ap.add_argument("--warmup", type=int, default=-1, help="untimed cases first (default: 1 on CUDA, 0 on CPU)")
    ap.add_argument("--no-components", dest="components", action="store_false",
                    help="skip the connected-component step")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    dev = common.setup(args.threads, args.device)
    warmup = args.warmup if args.warmup >= 0 else (1 if dev.type == "cuda" else 0)
    torch.manual_seed(0)
    models = ([load_model(p) for p in args.checkpoint] if args.checkpoint
              else [Student(model_config(args.model_config))])
    models = [m.to(dev).eval() for m in models]
    model = models if len(models) > 1 else models[0]

    stats = {}
    for _ in range(warmup):
        run_case(args, model, dev, args.case, stats)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    runs = [run_case(args, model, dev, args.case, stats) for _ in range(args.reps)]

    per_case = [r["case_s"] for r in runs]
    per_fwd = [s for r in runs for s in r["forward_s"]]
    gflops = [conv_flops(m, stats["padded"]) / 1e9 for m in models]
    gflop = sum(gflops) / len(gflops)  # per pass, the mean over the models
    best_fwd = min(per_fwd)
    # The rate: one model's fastest pass; an ensemble's passes of its fastest case, all together.
    rate = (gflop / best_fwd if len(models) == 1 else
            sum(gflops) * args.flips / min(sum(r["forward_s"]) for r in runs))
    res = {"tool": "infer_reference", "what": "per-case inference, student, whole-volume forward",
           "env": common.environment(dev, args.threads), "case": args.case or "phantom",
           "checkpoint": args.checkpoint or "random",
           "model_config": [m.options for m in models] if len(models) > 1 else models[0].options,
           "bf16": args.bf16, "flips": args.flips,
           "warmup_cases": warmup, "reps": args.reps, **stats,
           "case_s": per_case, "case_s_best": min(per_case),
           "case_s_median": statistics.median(per_case),
           "forward_s": per_fwd, "forward_s_best": best_fwd,
           "forward_s_median": statistics.median(per_fwd),
           "stages_s_last": {k: v for k, v in runs[-1].items() if k != "forward_s"},
           "gflop_per_forward": round(gflop, 1), "gflops_best": round(rate, 1),
           **common.memory_figures(dev)}
    print("infer_reference: torch %s, %s, %d thread(s), %s, %d flip(s), case %s, crop %s → %s"
          % (torch.__version__, dev, torch.get_num_threads(), "bf16" if args.bf16 else "fp32",
             args.flips, res["case"], "x".join(map(str, stats["crop"])), "x".join(map(str, stats["padded"]))))
    last = runs[-1]
    print("  per case   %.2f s best, %.2f s median of %d (read %.2f, preprocess %.2f, forward %.2f, post %.2f)"
          % (res["case_s_best"], res["case_s_median"], args.reps, last["read_s"], last["preprocess_s"],
             sum(last["forward_s"]), last["postprocess_s"]))
    print("  per forward %.3f s best, %.3f s median; %.0f GFLOP per pass → %.0f GFLOP/s"
          % (best_fwd, res["forward_s_median"], gflop, res["gflops_best"]))
    mem = "  peak RSS %.2f GB" % res["peak_rss_gb"]
    if dev.type == "cuda":
        mem += "; CUDA max allocated %.2f GB, reserved %.2f GB" % (res["cuda_max_allocated_gb"],
                                                                  res["cuda_max_reserved_gb"])
    print(mem + "; components: %s; labels %s" % (stats["components"], stats["label_voxels"]))
    common.write_json(args.json, res)


if __name__ == "__main__":
    main()
