"""kdseg in plain PyTorch: load a checkpoint written by the C++ toolkit and run its network.

    import kdseg
    model, plan = kdseg.load("runs/student/best.pt")   # eval mode, CPU
    logits = model(x)            # x (B,4,D,H,W) float32 → (B,3,D,H,W) WT, TC, ET logits
    probs = logits.sigmoid()

    # one case from its four files, as `kdseg predict` does (python/kdseg/predict.py)
    labels = kdseg.predict_case("runs/student/best.pt", ["t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz",
                                "flair.nii.gz"], out="seg.nii.gz")   # uint8 {0,1,2,4}

The five architectures (unet, resunet, resunet-vae, cascade, student) mirror src/kdseg/models/
with the same parameter names, option defaults and forward maths (tests/python/parity.py checks
them against the C++ networks).
"""
from .checkpoint import FORMAT_VERSION, PLAN_DEFAULTS, load, read_checkpoint
from .checkpoint_file import CheckpointError, content_digest, load_dict
from .models import (ARCHITECTURES, Cascade, CascadeNet, ResUNet, Student, UNet, build_model,
                     resolve_options)
from .predict import predict_case, predict_probabilities, preprocess

__version__ = "0.1.0"

__all__ = ["ARCHITECTURES", "Cascade", "CascadeNet", "CheckpointError", "FORMAT_VERSION",
           "PLAN_DEFAULTS", "ResUNet", "Student", "UNet", "build_model", "content_digest", "load",
           "load_dict", "predict_case", "predict_probabilities", "preprocess", "read_checkpoint",
           "resolve_options"]
