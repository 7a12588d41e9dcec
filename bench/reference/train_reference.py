#!/usr/bin/python3
"""One training step of the paper-size student and one augmented sample, in plain PyTorch: the
in-run baselines of issue 9 (CPU with Debian's python3-torch 1.13; GPU with pip PyTorch 2.x).

train: Adam (lr 1e-4) on a fixed (B,4,patch) input with sphere-shaped WT/TC/ET targets; loss =
  soft Dice 1 − (2Σpg+ε)/(Σp²+Σg²+ε) per sample and region, averaged, + BCE averaged over voxels
  and summed over regions (docs/design.md §4); fp32, or bf16 autocast with --bf16. Timed: forward,
  backward and optimiser step (data already on the device); s/step after --warmup steps.
  Peak memory: CPU resident set, or torch.cuda.max_memory_allocated after the warm-up.
aug: the authors'-style single-threaded sample (their dataloader.py, plus rotation): crop a patch
  from a z-scored float64 case, one-hot labels (float64), random scale 0.9–1.1 and rotation ±10°
  about each axis applied about the patch centre by linear float64 resampling (mode reflect) of
  the 4 image and 4 one-hot channels — scipy.ndimage.affine_transform, or torch grid_sample
  float64 without scipy — random X/Y mirror, per-modality intensity ×U(0.9,1.1) +U(−0.2,0.2),
  one-hot → WT/TC/ET. Timed per sample on one thread.

  /usr/bin/python3 bench/reference/train_reference.py --threads 2                # CPU, 144x144x128 b1
  python3 bench/reference/train_reference.py --device cuda --bf16 --what train --json t.json
"""
import argparse
import math
import os
import random
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from student import Student, model_config  # noqa: E402


def parse_patch(text):
    """'128' → (128,128,128); '144x144x128' or '144,144,128' → (144,144,128)."""
    parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("patch: one size or three (e.g. 144x144x128), got %r" % text)
    return tuple(parts)


# ---------------------------------------------------------------- training step
def sphere_targets(batch, patch, dev, seed=0):
    """(B,3,D,H,W) float WT ⊇ TC ⊇ ET: nested spheres at a random centre per sample."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.arange(n, dtype=torch.float32) for n in patch]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    out = torch.zeros((batch, 3) + tuple(patch))
    for b in range(batch):
        c = [float(n) * (0.3 + 0.4 * torch.rand(1, generator=g).item()) for n in patch]
        r = ((d - c[0]) ** 2 + (h - c[1]) ** 2 + (w - c[2]) ** 2).sqrt()
        for k, radius in enumerate((30.0, 18.0, 10.0)):
            out[b, k] = (r < radius).float()
    return out.to(dev)


def dice_bce_loss(logits, target, eps=1e-5):
    logits = logits.float()
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.dim()))
    dice = 1 - (2 * (p * target).sum(dims) + eps) / ((p * p).sum(dims) + (target * target).sum(dims) + eps)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((0,) + dims)
    return dice.mean() + bce.sum()


def bench_train(args, dev):
    torch.manual_seed(0)
    model = Student(model_config(args.model_config)).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn((args.batch, 4) + args.patch, device=dev)
    y = sphere_targets(args.batch, args.patch, dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with common.autocast(dev, args.bf16):
            logits = model(x)
        loss = dice_bce_loss(logits, y)
        loss.backward()
        opt.step()
        return loss

    losses = []
    for _ in range(args.warmup):
        losses.append(float(step()))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(args.steps):
        with common.Timer(dev) as t:
            loss = step()
        times.append(t.s)
        losses.append(float(loss))
    res = {"patch": list(args.patch), "batch": args.batch, "bf16": args.bf16, "model_config": model.options, "warmup_steps": args.warmup,
           "step_s": times, "step_s_best": min(times), "step_s_median": statistics.median(times),
           "losses": [round(l, 5) for l in losses], **common.memory_figures(dev)}
    print("train: student %s batch %d, %s, %s: %.3f s/step best, %.3f median of %d (after %d warm-up); "
          "loss %.4f → %.4f"
          % ("x".join(map(str, args.patch)), args.batch, "bf16 autocast" if args.bf16 else "fp32", dev,
             res["step_s_best"], res["step_s_median"], args.steps, args.warmup, losses[0], losses[-1]))
    mem = "       peak RSS %.2f GB" % res["peak_rss_gb"]
    if dev.type == "cuda":
        mem += "; CUDA max allocated %.2f GB (reserved %.2f GB)" % (res["cuda_max_allocated_gb"],
                                                                  res["cuda_max_reserved_gb"])
    print(mem)
    return res


# ---------------------------------------------------------------- augmentation
def load_volume(case_dir):
    """(image (4,X,Y,Z) float64 z-scored over the brain, labels (X,Y,Z) int64 in 0..3)."""
    if case_dir:
        img = common.read_case(case_dir)
        cid = os.path.basename(os.path.normpath(case_dir))
        seg_path = os.path.join(case_dir, cid + "_seg.nii.gz")
        seg = common.read_nifti(seg_path).round().long() if os.path.exists(seg_path) else None
    else:
        img, seg = common.phantom_case(), None
    if seg is None:
        seg = (img[3] > img[3][img[3] > 0].mean() + 2 * img[3][img[3] > 0].std()).long() * 2
    img = img.double()
    mask = img > 0
    n = mask.sum((1, 2, 3)).clamp(min=1)
    mean = img.sum((1, 2, 3)) / n
    std = ((img * img).sum((1, 2, 3)) / n - mean * mean).sqrt()
    img = (img - mean.view(4, 1, 1, 1)) / std.view(4, 1, 1, 1)  # as the authors: background too
    seg = torch.where(seg == 4, torch.full_like(seg, 3), seg)  # labels 0,1,2,4 → classes 0..3
    return img, seg


def rotation_scale(rng):
    """3×3 matrix mapping output voxel offsets (from the centre) to input offsets."""
    m = torch.eye(3, dtype=torch.float64)
    for axis in range(3):
        a = math.radians(rng.uniform(-10, 10))
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3, dtype=torch.float64)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = r @ m
    return m @ torch.diag(torch.tensor([rng.uniform(0.9, 1.1) for _ in range(3)], dtype=torch.float64))


def resample_scipy(chans, m):
    import numpy as np
    from scipy.ndimage import affine_transform
    a = chans.numpy()
    centre = (np.array(a.shape[1:]) - 1) / 2.0
    mat = m.numpy()
    offset = centre - mat @ centre
    return torch.from_numpy(np.stack([affine_transform(c, mat, offset, order=1, mode="reflect")
                                      for c in a]))


def resample_torch(chans, m):
    """The same map with grid_sample (float64, trilinear, reflection). theta works on normalised
    (x=W, y=H, z=D) coordinates: theta = P S M S⁻¹ P with S = diag(2/size), P the axis reversal."""
    size = torch.tensor(chans.shape[1:], dtype=torch.float64)
    s = torch.diag(2 / size)
    theta_dhw = s @ m @ torch.inverse(s)
    p = torch.eye(3, dtype=torch.float64).flip(0)
    theta = torch.zeros(1, 3, 4, dtype=torch.float64)
    theta[0, :, :3] = p @ theta_dhw @ p
    grid = F.affine_grid(theta, [1, chans.shape[0]] + list(chans.shape[1:]), align_corners=False)
    return F.grid_sample(chans[None], grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0]


def augment(img, seg, patch, rng, backend):
    lo = [rng.randrange(0, img.shape[1 + a] - patch[a] + 1) for a in range(3)]
    sl = tuple(slice(lo[a], lo[a] + patch[a]) for a in range(3))
    x = img[(slice(None),) + sl]                                            # (4,D,H,W) float64
    onehot = F.one_hot(seg[sl], 4).permute(3, 0, 1, 2).double()            # (4,D,H,W) float64
    m = rotation_scale(rng)
    chans = torch.cat([x, onehot]).contiguous()
    chans = resample_scipy(chans, m) if backend == "scipy" else resample_torch(chans, m)
    for axis in (1, 2):  # X and Y, not Z
        if rng.random() < 0.5:
            chans = chans.flip(axis)
    x, onehot = chans[:4], chans[4:]
    scale = torch.tensor([rng.uniform(0.9, 1.1) for _ in range(4)], dtype=torch.float64).view(4, 1, 1, 1)
    shift = torch.tensor([rng.uniform(-0.2, 0.2) for _ in range(4)], dtype=torch.float64).view(4, 1, 1, 1)
    x = x * scale + shift
    wt = onehot[1:].sum(0)
    tc = onehot[1] + onehot[3]
    et = onehot[3]
    return x.float(), torch.stack([wt, tc, et]).float()


def bench_aug(args):
    backend = args.aug_backend
    if backend == "auto":
        try:
            import scipy.ndimage  # noqa: F401
            backend = "scipy"
        except ImportError:
            backend = "torch"
    img, seg = load_volume(args.case)
    patch = args.aug_patch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference loader: one worker, one thread
    rng = random.Random(0)
    times = []
    for _ in range(args.aug_samples):
        with common.Timer(torch.device("cpu")) as t:
            x, y = augment(img, seg, patch, rng, backend)
        times.append(t.s)
    torch.set_num_threads(threads)
    res = {"patch": list(patch), "backend": backend, "samples": args.aug_samples,
           "case": args.case or "phantom", "sample_s": times, "sample_s_best": min(times),
           "sample_s_median": statistics.median(times)}
    print("aug: %s sample, 4+4 channels float64, %s, 1 thread: %.3f s best, %.3f s median of %d"
          % ("x".join(map(str, patch)), "scipy.ndimage.affine_transform" if backend == "scipy"
             else "torch grid_sample", res["sample_s_best"], res["sample_s_median"], len(times)))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", default="both", choices=["train", "aug", "both"])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for training (0 = torch's default)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GroupNorm stays fp32)")
    ap.add_argument("--patch", type=parse_patch, default=None,
                    help="training patch, e.g. 128 or 144x144x128 (default: 144x144x128 on CPU, 128 on CUDA)")
    ap.add_argument("--model-config", default=None,
                    help='student options as JSON, or "tiny" (widths 8,8,16,16, GroupNorm 4); default: paper size')
    ap.add_argument("--batch", type=int, default=0, help="batch size (default: 1 on CPU, 2 on CUDA)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 2 on CPU, 10 on CUDA)")
    ap.add_argument("--warmup", type=int, default=-1, help="untimed steps first (default: 1 on CPU, 3 on CUDA)")
    ap.add_argument("--aug-patch", type=parse_patch, default=(144, 144, 128))
    ap.add_argument("--aug-samples", type=int, default=3)
    ap.add_argument("--aug-backend", default="auto", choices=["auto", "scipy", "torch"])
    ap.add_argument("--case", help="BraTS case folder for the augmentation (default: a phantom)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    dev = common.setup(args.threads, args.device)
    gpu = dev.type == "cuda"
    args.patch = args.patch or ((128, 128, 128) if gpu else (144, 144, 128))
    args.batch = args.batch or (2 if gpu else 1)
    args.steps = args.steps or (10 if gpu else 2)
    args.warmup = args.warmup if args.warmup >= 0 else (3 if gpu else 1)
    res = {"tool": "train_reference", "env": common.environment(dev, args.threads)}
    if args.what in ("aug", "both"):
        res["aug"] = bench_aug(args)
    if args.what in ("train", "both"):
        res["train"] = bench_train(args, dev)
    res.update(common.memory_figures(dev))
    common.write_json(args.json, res)


if __name__ == "__main__":
    main()
