"""Shared helpers of the Python reference benchmarks (bench/reference/*.py): device and thread
set-up, timers that synchronise CUDA, peak memory, a NIfTI reader that needs no nibabel (the GPU
machine's pip PyTorch has none), a brain-like phantom when no case is given, and JSON output.
Runs with Debian's python3-torch 1.13 and with PyTorch 2.x."""
import gzip
import json
import os
import platform
import resource
import struct
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def setup(threads, device):
    """Sets torch's CPU threads (0 = all cores) and returns a torch.device ("auto" = cuda if any)."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device %s: torch %s sees no CUDA device" % (device, torch.__version__))
        torch.backends.cudnn.benchmark = True  # what a PyTorch user turns on for fixed shapes
    return dev


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Timer:
    """with Timer(dev) as t: ...  →  t.s seconds (CUDA synchronised at both ends)."""

    def __init__(self, dev):
        self.dev = dev

    def __enter__(self):
        sync(self.dev)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.dev)
        self.s = time.perf_counter() - self.t0


def autocast(dev, bf16):
    """bf16 autocast on CPU or CUDA (GroupNorm stays fp32 under both autocast lists), or nothing."""
    if not bf16:
        return torch.autocast(device_type=dev.type, enabled=False)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def peak_rss_gb():
    """Peak resident memory of this process (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_figures(dev):
    m = {"peak_rss_gb": round(peak_rss_gb(), 3)}
    if dev.type == "cuda":
        m["cuda_max_allocated_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
        m["cuda_max_reserved_gb"] = round(torch.cuda.max_memory_reserved(dev) / 2**30, 3)
    return m


def environment(dev, threads):
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev),
           "threads": torch.get_num_threads(), "host": platform.node(),
           "malloc": "LD_PRELOAD=" + os.environ["LD_PRELOAD"] if os.environ.get("LD_PRELOAD") else "glibc"}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def write_json(path, result):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)


# ---------------------------------------------------------------- NIfTI without nibabel
_DTYPES = {2: torch.uint8, 4: torch.int16, 8: torch.int32, 16: torch.float32, 64: torch.float64,
           256: torch.int8}


def read_nifti(path):
    """A NIfTI-1/2 volume as a float32 tensor indexed (X,Y,Z) like nibabel's get_fdata().
    nibabel when installed; else a little-endian reader for the common datatypes."""
    try:
        import nibabel
        import numpy as np
        return torch.from_numpy(np.asarray(nibabel.load(path).get_fdata(dtype=np.float32)))
    except ImportError:
        pass
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    (size,) = struct.unpack_from("<i", raw, 0)
    if size == 348:
        dims = struct.unpack_from("<8h", raw, 40)
        (dtype,) = struct.unpack_from("<h", raw, 70)
        (offset,) = struct.unpack_from("<f", raw, 108)
        slope, inter = struct.unpack_from("<2f", raw, 112)
    elif size == 540:
        (dtype,) = struct.unpack_from("<h", raw, 12)
        dims = struct.unpack_from("<8q", raw, 16)
        (offset,) = struct.unpack_from("<q", raw, 168)
        slope, inter = struct.unpack_from("<2d", raw, 176)
    else:
        raise ValueError("%s: not a little-endian NIfTI-1/2 file (sizeof_hdr %d)" % (path, size))
    if dtype not in _DTYPES:
        raise ValueError("%s: datatype %d not supported without nibabel" % (path, dtype))
    shape = [int(d) for d in dims[1:1 + dims[0]]]
    n = 1
    for d in shape:
        n *= d
    t = torch.frombuffer(bytearray(raw[int(offset):]), dtype=_DTYPES[dtype], count=n)
    t = t.reshape(shape[::-1]).permute(*reversed(range(len(shape)))).float()  # Fortran order
    if slope not in (0.0, 1.0) or inter != 0.0:
        t = t * (slope if slope != 0.0 else 1.0) + inter
    return t


def read_case(case_dir):
    """(4,X,Y,Z) float32 in kdseg's channel order T1, T1ce, T2, FLAIR from a BraTS 2018-2021 case
    folder <ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz."""
    cid = os.path.basename(os.path.normpath(case_dir))
    vols = []
    for m in ("t1", "t1ce", "t2", "flair"):
        p = os.path.join(case_dir, "%s_%s.nii.gz" % (cid, m))
        if not os.path.exists(p):
            p = p[:-3]
        vols.append(read_nifti(p))
    return torch.stack(vols)


def phantom_case(shape=(240, 240, 155), seed=1):
    """A brain-sized stand-in when no case is given: 4 noisy modalities inside an ellipsoid with a
    bright 'tumour' blob, zero outside (so cropping and z-scoring behave as on a BraTS case)."""
    g = torch.Generator().manual_seed(seed)
    axes = [torch.linspace(-1, 1, n) for n in shape]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    brain = (x / 0.6) ** 2 + (y / 0.75) ** 2 + (z / 0.7) ** 2 < 1
    tumour = (x - 0.2) ** 2 + (y + 0.1) ** 2 + (z - 0.1) ** 2 < 0.04
    img = 100 + 20 * torch.randn((4,) + tuple(shape), generator=g)
    img = img + 80 * tumour.float()
    return img * brain.float()
