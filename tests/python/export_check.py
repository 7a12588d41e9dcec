#!/usr/bin/python3
"""Checks a file written by `python -m kdseg export` (run by tests/models/test_python_export.cpp).

  PYTHONPATH=python /usr/bin/python3 tests/python/export_check.py EXPORTED IO --format F --arch A

IO is a torch::pickle_save'd dict with "input" (B,4,D,H,W) and "logits" (B,3,D,H,W), the C++
network's eval-mode output for that input.

  torchscript  torch.jit.load with the extra file kdseg_plan.json: the plan names the
               architecture and the network's stride, and the loaded module's logits for the
               input are within rtol · max|logits| of the C++ ones.
  onnx         onnx.checker.check_model; the metadata kdseg_plan names the architecture and holds
               the full plan; input "image" and output "logits" have symbolic batch and spatial
               axes. (Running it is onnx_run.js's job: no ONNX runtime in Debian's Python.)
Prints the largest difference and exits 1 on any failure.
"""
import argparse
import json
import sys

import torch

from kdseg import PLAN_DEFAULTS
from kdseg.export import EXPORT_FORMAT, EXTRA_FILE, METADATA_KEY


def check_meta(meta, arch, where):
    if meta.get("format") != EXPORT_FORMAT or meta.get("arch") != arch:
        sys.exit("%s: format %r, arch %r; expected %r, %r"
                 % (where, meta.get("format"), meta.get("arch"), EXPORT_FORMAT, arch))
    plan = meta.get("plan", {})
    if sorted(plan) != sorted(PLAN_DEFAULTS):
        sys.exit("%s: plan keys %s, expected %s" % (where, sorted(plan), sorted(PLAN_DEFAULTS)))
    if meta["input"]["spatial_multiple_of"] != plan["stride"]:
        sys.exit("%s: input multiple %s, plan stride %s"
                 % (where, meta["input"]["spatial_multiple_of"], plan["stride"]))
    if meta["output"]["regions"] != plan["regions"]:
        sys.exit("%s: output regions differ from the plan's" % where)


def check_torchscript(path, io, arch, rtol):
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(path, _extra_files=extra)
    if not extra[EXTRA_FILE]:
        sys.exit("%s: no extra file %s" % (path, EXTRA_FILE))
    check_meta(json.loads(extra[EXTRA_FILE]), arch, "%s:%s" % (path, EXTRA_FILE))
    x, want = io["input"], io["logits"]
    with torch.no_grad():
        got = module(x)
    if got.shape != want.shape:
        sys.exit("%s: logits %s, C++ gave %s" % (path, tuple(got.shape), tuple(want.shape)))
    diff, scale = (got - want).abs().max().item(), want.abs().max().item()
    ok = diff <= rtol * scale
    print("%s torchscript (torch.jit.load): input %s, max|dlogits| = %.3g, max|logits| = %.3g, "
          "tolerance %.3g: %s" % (arch, "x".join(map(str, x.shape)), diff, scale, rtol * scale,
                                  "ok" if ok else "FAIL"))
    return ok


def check_onnx(path, arch):
    import onnx
    model = onnx.load(path)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        sys.exit("%s: no metadata %s (keys: %s)" % (path, METADATA_KEY, sorted(meta)))
    check_meta(json.loads(meta[METADATA_KEY]), arch, "%s:%s" % (path, METADATA_KEY))
    for value, name in ((model.graph.input[0], "image"), (model.graph.output[0], "logits")):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.name != name or len(dims) != 5 or any(
                not isinstance(dims[i], str) for i in (0, 2, 3, 4)):
            sys.exit("%s: %s %s, expected %s (B,C,D,H,W) with symbolic B, D, H, W"
                     % (path, value.name, dims, name))
    print("%s onnx: checker ok, opset %d, metadata %s ok, image %s" % (
        arch, model.opset_import[0].version, METADATA_KEY,
        [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exported")
    ap.add_argument("io", help="dict with the C++ input and logits (torch::pickle_save)")
    ap.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    ap.add_argument("--arch", required=True)
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative to max|logits|")
    args = ap.parse_args()
    if args.format == "onnx":
        ok = check_onnx(args.exported, args.arch)
    else:
        ok = check_torchscript(args.exported, torch.load(args.io), args.arch, args.rtol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
