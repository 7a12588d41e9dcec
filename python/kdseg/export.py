"""Export a kdseg checkpoint's network to TorchScript or ONNX (python -m kdseg export).

Both files take "image" (B,4,D,H,W) float32, channels in plan["channels"] order (T1, T1ce, T2,
FLAIR), D/H/W any multiples of the network's stride, and return "logits" (B,3,D,H,W) in
plan["regions"] order (WT, TC, ET): sigmoid, then threshold 0.5 per region. Preprocessing (crop,
resampling, z-score) is the caller's, as the plan describes; both files carry it as JSON
(plan_metadata):

  TorchScript  the extra file kdseg_plan.json (torch.jit.load(path, _extra_files=...);
               C++ torch::jit::load(path, device, extra_files))
  ONNX         metadata_props key kdseg_plan (opset OPSET, dynamic batch and spatial axes);
               attaching it needs the `onnx` module (Debian python3-onnx): without it the export
               fails, because a file without its plan is not a kdseg export.

The networks are traced; export checks the traced module against the eager one on a second input
size (a different multiple of the stride on every axis), so a size baked into the trace fails the
export instead of the user's inference.
"""
import io
import json
import os
import warnings

import torch

from .checkpoint import load

EXPORT_FORMAT = "kdseg-export"
EXPORT_VERSION = 1
OPSET = 13  # ONNX opset: 13..17 are what torch 1.13 writes; 13 runs in the most runtimes
EXTRA_FILE = "kdseg_plan.json"  # TorchScript extra file
METADATA_KEY = "kdseg_plan"     # ONNX metadata_props key
FORMATS = ("torchscript", "onnx")


def plan_metadata(model, plan):
    """The JSON-able description an exported file carries: architecture, options, plan, and what
    the input and output channels mean."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": model.arch,
        "model": model.options,
        "plan": plan,
        "input": {"name": "image", "shape": "(B,%d,D,H,W) float32" % len(plan["channels"]),
                  "channels": plan["channels"], "spatial_multiple_of": model.stride()},
        "output": {"name": "logits", "shape": "(B,%d,D,H,W) float32" % len(plan["regions"]),
                   "regions": plan["regions"],
                   "postprocess": "sigmoid then threshold 0.5, per region (regions overlap)"},
    }


def _example_sizes(stride):
    """Two input sizes (D,H,W), different on every axis: the one traced and the one checked."""
    return (2 * stride, stride, 3 * stride), (stride, 3 * stride, 2 * stride)


def _trace(model, example):
    with warnings.catch_warnings():
        # check_input's size tests become constants in the trace (TracerWarning): the checks
        # hold for the traced size; other sizes are checked by _check_other_size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, example, check_trace=False)


def _check_other_size(model, traced, size, path):
    x = torch.randn(1, model.options["in_channels"], *size)
    with torch.no_grad():
        want, got = model(x), traced(x)
    scale = max(want.abs().max().item(), 1e-12)
    if got.shape != want.shape or (got - want).abs().max().item() > 1e-4 * scale:
        raise RuntimeError("%s: the traced %s gives other logits than the network at %s voxels; "
                           "tracing baked an input size into it (report this as a kdseg bug)"
                           % (path, model.arch, "x".join(map(str, size))))


def _save(write, tmp, out):
    """write() to the temporary name `tmp`, then rename it to `out`: no half-written `out`."""
    try:
        write()
        os.replace(tmp, out)
    except (OSError, RuntimeError) as e:
        raise RuntimeError("%s: cannot write the export (%s); check that its folder exists and "
                           "is writable" % (out, e))


def export_torchscript(model, plan, out):
    """Trace `model` (eval mode) and save it to `out` with the extra file kdseg_plan.json."""
    size, other = _example_sizes(model.stride())
    example = torch.randn(1, model.options["in_channels"], *size)
    with torch.no_grad():
        traced = _trace(model, example)
    _check_other_size(model, traced, other, out)
    extra = {EXTRA_FILE: json.dumps(plan_metadata(model, plan), indent=1)}
    tmp = "%s.tmp.%d" % (out, os.getpid())
    try:
        _save(lambda: torch.jit.save(traced, tmp, _extra_files=extra), tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_onnx(model, plan, out):
    """Export `model` to ONNX (opset OPSET, dynamic B/D/H/W) with the plan in metadata_props."""
    try:
        import onnx
    except ImportError:
        raise RuntimeError("%s: the ONNX export needs the onnx Python module to attach the plan "
                           "(apt-get install python3-onnx, or pip install onnx)" % out)
    size, _ = _example_sizes(model.stride())
    example = torch.randn(1, model.options["in_channels"], *size)
    axes = {0: "B", 2: "D", 3: "H", 4: "W"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 1.13's exporter notes every constant it cannot type; the graph is still checked.
        warnings.filterwarnings("ignore", "The shape inference of prim::Constant")
        torch.onnx.export(model, example, buffer, opset_version=OPSET, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(plan_metadata(model, plan))
    proto.producer_name = "kdseg"
    onnx.checker.check_model(proto)
    tmp = "%s.tmp.%d" % (out, os.getpid())
    try:
        _save(lambda: onnx.save(proto, tmp), tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export(checkpoint, fmt, out):
    """Load the kdseg checkpoint and write it as `fmt` ("torchscript" or "onnx") to `out`."""
    if fmt not in FORMATS:
        raise ValueError("unknown export format %r; use one of %s" % (fmt, ", ".join(FORMATS)))
    model, plan = load(checkpoint)
    if fmt == "torchscript":
        export_torchscript(model, plan, out)
    else:
        export_onnx(model, plan, out)
    return model, plan
