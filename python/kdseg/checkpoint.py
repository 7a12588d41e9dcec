"""Reading kdseg checkpoints (src/kdseg/models/checkpoint.{h,cpp}, docs/design.md §2,
docs/checkpoint.md).

A checkpoint is one file written by C++ torch::pickle_save of a dict:

  "format"      "kdseg-checkpoint"
  "version"     2 (FORMAT_VERSION); 1 (no digest) is read with a warning; another is refused
  "arch"        "unet" | "resunet" | "resunet-vae" | "cascade" | "student"
  "config"      JSON text {"model": <architecture options>, "plan": <preprocessing plan>}
  "state_dict"  dict name → float32 CPU tensor, the module's parameter names
  + optional extra entries (e.g. the optimiser state of last.pt), returned untouched
  "digest"      "sha256:<64 hex>" of all the other entries (checkpoint_file.content_digest)

The file is read with checkpoint_file.load_dict, which never runs anything from it (torch.load
would run whatever function its pickle names); then the digest is checked.
"""
import json
import sys

from .checkpoint_file import CheckpointError, content_digest, load_dict
from .models import build_model

FORMAT = "kdseg-checkpoint"
FORMAT_VERSION = 2
VERSION_WITHOUT_DIGEST = 1

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

_RESERVED = ("format", "version", "arch", "config", "state_dict", "digest")


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
    "state_dict", "extra" (the other entries), "version", "digest"}, after checking its format,
    version and digest. Nothing in the file is run. Raises CheckpointError (a ValueError) naming
    the file."""
    hint = "kdseg reads the .pt files that kdseg train writes"
    d = load_dict(path)
    if not isinstance(d, dict):
        raise CheckpointError("%s: not a kdseg checkpoint (not a dict); %s" % (path, hint))
    for key in ("format", "version"):
        if key not in d:
            raise CheckpointError('%s: not a kdseg checkpoint (no "%s" entry); %s'
                                  % (path, key, hint))
    if d["format"] != FORMAT:
        raise CheckpointError('%s: not a kdseg checkpoint (format is not "%s"); %s'
                              % (path, FORMAT, hint))
    version = d["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not (
            VERSION_WITHOUT_DIGEST <= version <= FORMAT_VERSION):
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError("%s: checkpoint format version %s, this kdseg reads version %d "
                              "(and %d); %s"
                              % (path, version, FORMAT_VERSION, VERSION_WITHOUT_DIGEST,
                                 "it was written by a newer kdseg" if newer
                                 else "it was written by an older kdseg: retrain"))
    if "digest" in d:
        try:
            actual = content_digest(d)
        except CheckpointError as e:
            raise CheckpointError("%s: not a kdseg checkpoint (%s); %s" % (path, e, hint))
        if d["digest"] != actual:
            raise CheckpointError("%s: damaged checkpoint: its content does not match its digest "
                                  "(stored %s, content %s); copy it again, or use another "
                                  "checkpoint" % (path, d["digest"], actual))
    elif version >= FORMAT_VERSION:
        raise CheckpointError('%s: damaged checkpoint (version %d without its "digest" entry)'
                              % (path, version))
    else:
        print("warning: %s: checkpoint version %d has no digest, so damage to it cannot be "
              "detected (a checkpoint written by this kdseg has one)" % (path, version),
              file=sys.stderr)
    for key in ("arch", "config", "state_dict"):
        if key not in d:
            raise CheckpointError('%s: not a kdseg checkpoint (no "%s" entry); %s'
                                  % (path, key, hint))
    if not isinstance(d["arch"], str) or not isinstance(d["config"], str) or not isinstance(
            d["state_dict"], dict):
        raise CheckpointError("%s: malformed checkpoint (arch and config must be strings, "
                              "state_dict a dict); %s" % (path, hint))
    try:
        config = json.loads(d["config"])
    except ValueError as e:
        raise CheckpointError("%s: malformed checkpoint config JSON: %s; %s" % (path, e, hint))
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError('%s: malformed checkpoint config (no "model" entry); %s' % (path, hint))
    move = (lambda t: t.to(device)) if str(device) != "cpu" else (lambda t: t)
    return {
        "arch": d["arch"],
        "model": config["model"],
        "plan": resolve_plan(config.get("plan")),
        "state_dict": {k: move(v) for k, v in d["state_dict"].items()},
        "extra": {k: v for k, v in d.items() if k not in _RESERVED},
        "version": version,
        "digest": d.get("digest", ""),
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
