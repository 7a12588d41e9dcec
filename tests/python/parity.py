#!/usr/bin/python3
"""Parity of the Python package with the C++ networks (run by tests/models/test_python_parity.cpp).

  PYTHONPATH=python /usr/bin/python3 tests/python/parity.py CHECKPOINT IO [--arch NAME] [--rtol R]

CHECKPOINT is a kdseg checkpoint (save_checkpoint); IO a torch::pickle_save'd dict with "input"
(B,4,D,H,W) and "logits" (B,3,D,H,W), the C++ network's eval-mode output for that input. Loads the
checkpoint with kdseg.load, runs the input, prints the largest absolute difference of the logits
and the largest absolute logit, and exits 1 unless max|Δlogits| <= rtol · max|logits| (fp32).
"""
import argparse
import sys

import torch

import kdseg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("io", help="dict with the C++ input and logits (torch::pickle_save)")
    ap.add_argument("--arch", help="the architecture the checkpoint must hold")
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative to max|logits|")
    args = ap.parse_args()

    torch.manual_seed(0)
    model, plan = kdseg.load(args.checkpoint)
    arch = model.arch
    if args.arch and arch != args.arch:
        sys.exit("%s: holds %s, expected %s" % (args.checkpoint, arch, args.arch))
    if model.training:
        sys.exit("%s: kdseg.load returned a module in training mode" % arch)
    if plan["stride"] != model.stride():
        sys.exit("%s: plan stride %d, network stride %d" % (arch, plan["stride"], model.stride()))

    io = torch.load(args.io)
    x, want = io["input"], io["logits"]
    with torch.no_grad():
        got = model(x)
    if got.shape != want.shape:
        sys.exit("%s: logits %s, C++ gave %s" % (arch, tuple(got.shape), tuple(want.shape)))
    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    ok = diff <= args.rtol * scale
    print("%s: input %s, max|dlogits| = %.3g, max|logits| = %.3g, tolerance %.3g: %s"
          % (arch, "x".join(map(str, x.shape)), diff, scale, args.rtol * scale,
             "ok" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
