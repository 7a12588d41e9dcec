"""Reading kdseg checkpoints (src/kdseg/models/checkpoint.{h,cpp}, DESIGN §2).

A checkpoint is one file written by C++ torch::pickle_save of a dict, which torch.load reads as a
plain dict:

  "format"      "kdseg-checkpoint"
  "version"     1 (FORMAT_VERSION); another version is refused
  "arch"        "unet" | "resunet" | "resunet-vae" | "cascade" | "student"
  "config"      JSON text {"model": <architecture options>, "plan": <preprocessing plan>}
  "state_dict"  dict name → float32 CPU tensor, the module's parameter names
  + optional extra entries (e.g. the optimiser state of last.pt), returned untouched.
"""
import json

import torch

from .models import build_model

FORMAT = "kdseg-checkpoint"
FORMAT_VERSION = 1

# The preprocessing plan's fields and defaults (PreprocessPlan in src/kdseg/models/plan.h).
PLAN_DEFAULTS = {
    "channels": ["t1", "t1ce", "t2", "flair"],  # input channel order
    "regions": ["WT", "TC", "ET"],               # output channel order (sigmoids)
    "spacing": [1.0, 1.0, 1.0],                  # mm (D,H,W) inputs are resampled to; 0 = as is
    "fixed_shape": [0, 0, 0],                    # voxels the cropped brain is resampled to; 0 = none
    "crop": "brain_bbox",                        # "brain_bbox" (non-zero voxels) or "none"
    "normalization": "zscore_nonzero",           # per modality over brain voxels, background 0
    "patch": [128, 128, 128],                    # training patch / inference window (D,H,W)
    "stride": 1,                                 # the network's total stride
}

_RESERVED = ("format", "version", "arch", "config", "state_dict")


def resolve_plan(plan=None):
    """The full plan: PLAN_DEFAULTS overridden by `plan` (dict or None); unknown keys are an error,
    as in the C++ reader."""
    resolved = {k: (list(v) if isinstance(v, list) else v) for k, v in PLAN_DEFAULTS.items()}
    unknown = [k for k in (plan or {}) if k not in resolved]
    if unknown:
        raise ValueError("preprocessing plan: unknown option(s): %s; known options: %s"
                         % (", ".join(unknown), ", ".join(sorted(resolved))))
    resolved.update(plan or {})
    return resolved


def read_checkpoint(path, device="cpu"):
    """The checkpoint at `path` as a dict {"arch", "model" (options dict), "plan" (full plan dict),
    "state_dict", "extra" (the other entries)}, after checking its format and version. Raises
    ValueError naming the file."""
    hint = "kdseg reads the .pt files that kdseg train writes"
    try:
        d = torch.load(path, map_location=device)
    except Exception as e:
        raise ValueError("%s: not a kdseg checkpoint (cannot be unpickled: %s); %s" % (path, e, hint))
    if not isinstance(d, dict):
        raise ValueError("%s: not a kdseg checkpoint (not a dict); %s" % (path, hint))
    for key in _RESERVED:
        if key not in d:
            raise ValueError('%s: not a kdseg checkpoint (no "%s" entry); %s' % (path, key, hint))
    if d["format"] != FORMAT:
        raise ValueError('%s: not a kdseg checkpoint (format is not "%s"); %s' % (path, FORMAT, hint))
    if d["version"] != FORMAT_VERSION:
        newer = isinstance(d["version"], int) and d["version"] > FORMAT_VERSION
        raise ValueError("%s: checkpoint format version %s, this kdseg reads version %d; %s"
                         % (path, d["version"], FORMAT_VERSION,
                            "it was written by a newer kdseg" if newer
                            else "it was written by an older kdseg: retrain"))
    config = json.loads(d["config"])
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError('%s: malformed checkpoint config (no "model" entry); %s' % (path, hint))
    return {
        "arch": d["arch"],
        "model": config["model"],
        "plan": resolve_plan(config.get("plan")),
        "state_dict": d["state_dict"],
        "extra": {k: v for k, v in d.items() if k not in _RESERVED},
    }


def load(path, device="cpu"):
    """(module, plan): the network of the kdseg checkpoint at `path`, built from its config, with
    its weights (strict: every name and shape must match), in eval mode on `device`; and its
    preprocessing plan as a dict (PLAN_DEFAULTS' keys).

    module(x) takes (B,4,D,H,W) float32, channels in plan["channels"] order, D/H/W multiples of
    plan["stride"], and returns logits (B,3,D,H,W) in plan["regions"] order (sigmoid → region
    probabilities)."""
    ckpt = read_checkpoint(path, device)
    try:
        module = build_model(ckpt["arch"], ckpt["model"])
    except ValueError as e:
        raise ValueError("%s: cannot build the network it describes: %s" % (path, e))
    module.load_state_dict(ckpt["state_dict"], strict=True)
    return module.to(device).eval(), ckpt["plan"]
