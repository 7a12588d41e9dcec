"""One case through a checkpoint's plan, as `kdseg predict` does (src/kdseg/infer/,
docs/design.md §4).

    import kdseg
    labels = kdseg.predict_case("runs/student/checkpoints/best.pt",
                                ["t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz", "flair.nii.gz"],
                                out="seg.nii.gz")   # uint8 labels {0,1,2,4}, the files' voxel order

Each step names the C++ function it mirrors; tests/e2e/test_python_predict.cpp compares the
label maps of this module and of the kdseg binary voxel by voxel.

Axes. As in C++ (src/kdseg/io/orientation.h), images are held in RAS+ canonical voxel order
(axis 0 towards Right, 1 Anterior, 2 Superior): tensors are (C,D,H,W) with D,H,W = canonical
x,y,z, and the "xy" mirror TTA flips D and H. Files are brought to that order with nibabel's
io_orientation (permutations and flips only, what kdseg's axis_map_to_ras chooses) and the
labels are put back into the files' own voxel order. Arrays given directly are taken as they are:
pass them in RAS+ order for the flips to mean what they mean in C++.

nibabel is imported only when files are read or written.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load

MODALITIES = ("t1", "t1ce", "t2", "flair")  # io/dataset.h kModalityNames: the input order here

# infer/ensemble.h kAutoWholeVoxels: "auto" uses one window over the whole crop up to this many.
AUTO_WHOLE_VOXELS = 8 * 1024 * 1024

# Internal labels {0,1,2,4} -> a convention's file values (io/dataset.cpp LabelConvention).
LABEL_CONVENTIONS = {
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 4},  # also BraTS 2018-2020: 1 NCR, 2 ED, 4 ET
    "brats2023": {0: 0, 1: 1, 2: 2, 4: 3},
    "msd": {0: 0, 1: 2, 2: 1, 4: 3},        # 1 ED, 2 NCR, 3 ET
    "nnunet": {0: 0, 1: 2, 2: 1, 4: 3},     # nnU-Net's BraTS conversion writes MSD's values
}


# --- reading (io/nifti.cpp read_volume, io/orientation.cpp) ---

def read_case(paths):
    """(image (4,X,Y,Z) float32 in RAS+ voxel order, spacing (3,) mm, reference nibabel image of
    the first file) from four NIfTI files T1, T1ce, T2, FLAIR on one grid."""
    import nibabel as nib
    if len(paths) != 4:
        raise ValueError("expected 4 files (T1, T1ce, T2, FLAIR), got %d" % len(paths))
    ref = nib.load(str(paths[0]))
    ornt = nib.io_orientation(ref.affine)
    channels = []
    for path in paths:
        img = nib.load(str(path))
        if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise ValueError("%s: grid %s differs from %s's %s; the four modalities must share "
                             "one grid" % (path, img.shape, paths[0], ref.shape))
        # Scaled like C++ (value · scl_slope + scl_inter in double, then float).
        x = np.asarray(img.dataobj, dtype=np.float64).astype(np.float32)
        channels.append(nib.orientations.apply_orientation(x.reshape(x.shape[:3]), ornt))
    # Voxel sizes from the matrix that orients the image (nifti.cpp canonical_frame), permuted.
    from_matrix = np.sqrt((ref.affine[:3, :3] ** 2).sum(0))
    spacing = [0.0] * 3
    for file_axis, (canon_axis, _) in enumerate(ornt):
        s = from_matrix[file_axis]
        if not (s > 0 and np.isfinite(s)):
            s = ref.header.get_zooms()[file_axis]
        spacing[int(canon_axis)] = float(s) if s > 0 else 1.0
    return np.ascontiguousarray(np.stack(channels)), tuple(spacing), ref


def to_file_order(labels, ref):
    """RAS+ labels (X,Y,Z) back into the voxel order of the file `ref` (orientation.h
    from_canonical)."""
    import nibabel as nib
    ornt = nib.io_orientation(ref.affine)
    back = nib.orientations.ornt_transform([[0, 1], [1, 1], [2, 1]], ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(labels, back))


def write_labels(path, labels, ref):
    """Writes labels in `ref`'s voxel order as uint8 with `ref`'s affine and header, unscaled
    (io/nifti.cpp write_labels)."""
    import os

    import nibabel as nib
    if os.path.dirname(str(path)):
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    out = nib.Nifti1Image(labels.astype(np.uint8), ref.affine, header)
    out.header.set_slope_inter(1, 0)
    nib.save(out, str(path))


# --- preprocessing (data/preprocess.cpp) ---

def nonzero_bbox(image):
    """(lo, hi): the box of the voxels non-zero in any channel of (C,D,H,W); None when there is
    none (nonzero_bbox)."""
    mask = (image != 0).any(0)
    if not mask.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(tuple(a for a in range(3) if a != axis)))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return lo, hi


def planned_shape(size, spacing, plan):
    """The preprocessed (D,H,W) of a box of `size` voxels at `spacing` mm (planned_shape)."""
    if plan["fixed_shape"][0] > 0:
        return list(plan["fixed_shape"])
    out = list(size)
    for i, target in enumerate(plan["spacing"]):
        if target <= 0 or abs(spacing[i] - target) <= 1e-3 * target:
            continue
        out[i] = max(1, int(math.floor(size[i] * spacing[i] / target + 0.5)))  # llround
    return out


def resample_linear(t, shape):
    """(C,D,H,W) float to `shape`: trilinear, align_corners = False (resample_linear)."""
    if list(t.shape[-3:]) == list(shape):
        return t.contiguous()
    return F.interpolate(t.float().unsqueeze(0), size=list(shape), mode="trilinear",
                         align_corners=False).squeeze(0).contiguous()


def zscore_nonzero(image):
    """Per channel z-score over its non-zero voxels in double, zeros stay 0; a channel with zero
    spread is only centred (zscore_nonzero_). image: (C,D,H,W) float32 numpy, returned anew."""
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        x = image[c].astype(np.float64)
        mask = x != 0
        if not mask.any():
            continue
        mean = x[mask].mean()
        sd = math.sqrt(((x[mask] - mean) ** 2).mean())
        scale = 1.0 / sd if sd > 0 else 1.0
        out[c][mask] = ((x[mask] - mean) * scale).astype(np.float32)
    return out


def preprocess(image, spacing, plan):
    """Steps 1-4 of preprocess_case on one case: `image` (4,X,Y,Z) with channels T1, T1ce, T2,
    FLAIR, `spacing` (3,) mm. Returns (x (C,D,H,W) float32 tensor, the network input, and the
    geometry dict {"lo", "hi", "full", "shape"} that undo_geometry needs)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[0] != 4:
        raise ValueError("expected 4 modalities (4,X,Y,Z), got shape %s" % (image.shape,))
    full = list(image.shape[1:])
    # 2. crop to the brain's box (plan.crop "brain_bbox"), or keep the whole grid ("none").
    if plan["crop"] == "brain_bbox":
        box = nonzero_bbox(image)
        if box is None:
            raise ValueError("every voxel of every modality is 0: there is no brain to crop to")
        lo, hi = box
    else:
        lo, hi = [0, 0, 0], full
    size = [h - l for l, h in zip(lo, hi)]
    shape = planned_shape(size, spacing, plan)
    # 1. channels in plan order.
    order = [MODALITIES.index(name) for name in plan["channels"]]
    x = image[order, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    # 3. resampling of the box (plan spacing or fixed_shape), trilinear.
    x = resample_linear(torch.from_numpy(np.ascontiguousarray(x)), shape).numpy()
    # 4. normalisation.
    if plan["normalization"] == "zscore_nonzero":
        x = zscore_nonzero(x)
    return torch.from_numpy(np.ascontiguousarray(x)), {"lo": lo, "hi": hi, "full": full,
                                                       "shape": shape}


def undo_geometry(probs, geometry):
    """(K,D,H,W) maps on the preprocessed grid -> (K, full...) on the case's grid: linear
    resampling to the box size, zeros outside the box (undo_geometry)."""
    lo, hi = geometry["lo"], geometry["hi"]
    p = resample_linear(probs, [h - l for l, h in zip(lo, hi)])
    out = torch.zeros((p.shape[0],) + tuple(geometry["full"]), dtype=p.dtype)
    out[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = p
    return out


# --- sliding window (infer/sliding_window.cpp, infer/ensemble.cpp) ---

def window_starts(size, window, overlap):
    """Starts of windows covering [0, size) sharing at least `overlap` (window_starts)."""
    if window >= size:
        return [0]
    step = window * (1.0 - overlap)
    n = int(math.ceil((size - window) / step - 1e-9)) + 1
    actual = (size - window) / (n - 1)
    return [int(math.floor(actual * i + 0.5)) for i in range(n)]  # llround


def gaussian_weights(window, sigma_scale=0.125):
    """(d,h,w) float32 Gaussian centred on the window, σ = sigma_scale · window, max 1, floored at
    1e-3 (gaussian_weights)."""
    axes = []
    for w in window:
        c = (w - 1.0) / 2.0
        sigma = max(sigma_scale * w, 1e-6)
        x = torch.arange(w, dtype=torch.float64)
        axes.append(torch.exp(-0.5 * ((x - c) / sigma) ** 2))
    g = axes[0].view(-1, 1, 1) * axes[1].view(1, -1, 1) * axes[2].view(1, 1, -1)
    g = g / g.max()
    return g.clamp_min(1e-3).float().contiguous()


def whole_window(shape, stride):
    """The smallest window covering `shape` with sides multiples of `stride` (whole_window)."""
    s = max(stride, 1)
    return [max((n + s - 1) // s * s, s) for n in shape]


def resolve_window(window, plan, shape, stride):
    """The window for an image of `shape` under "auto", "plan", "whole", "DxHxW" or a (d,h,w)
    sequence (resolve_window)."""
    if window == "whole":
        return whole_window(shape, stride)
    if window == "auto":
        whole = whole_window(shape, stride)
        if whole[0] * whole[1] * whole[2] <= AUTO_WHOLE_VOXELS:
            return whole
    if window in ("auto", "plan"):
        w = list(plan["patch"])
    elif isinstance(window, str):
        w = [int(v) for v in window.split("x")]
    else:
        w = [int(v) for v in window]
    if len(w) != 3 or any(v <= 0 or v % stride for v in w):
        raise ValueError("window %s is not 3 positive multiples of the network's stride %d"
                         % (window, stride))
    return w


MIRRORS = {"none": [[]], "xy": [[], [2], [3], [2, 3]],  # dims of (N,C,D,H,W) (mirror_sets)
           "all": [[], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]]}


def with_mirror_tta(predict, mode):
    """A predictor averaging `predict` over the flips of `mode` (with_mirror_tta, unfused)."""
    if mode not in MIRRORS:
        raise ValueError('unknown tta mode "%s": use none, xy (4 flips) or all (8)' % mode)
    sets = MIRRORS[mode]
    if len(sets) == 1:
        return predict

    def mirrored(batch):
        acc = None
        for dims in sets:
            o = predict(batch) if not dims else predict(batch.flip(dims)).flip(dims)
            acc = o.float().clone() if acc is None else acc.add_(o)
        return acc.div_(len(sets))
    return mirrored


def sliding_window(image, predict, window, overlap=0.5, gaussian=True, sigma_scale=0.125):
    """(K,D,H,W): `predict` over windows of `image` (C,D,H,W), zero-padded at the far end where the
    window is larger, blended with Gaussian weights (sliding_window; one window per call)."""
    shape = list(image.shape[1:])
    padded = [max(s, w) for s, w in zip(shape, window)]
    x = image
    if padded != shape:
        x = torch.zeros((image.shape[0],) + tuple(padded), dtype=image.dtype)
        x[:, :shape[0], :shape[1], :shape[2]] = image
    starts = [window_starts(p, w, overlap) for p, w in zip(padded, window)]
    corners = [(i, j, k) for i in starts[0] for j in starts[1] for k in starts[2]]
    if len(corners) == 1:  # one window over the whole (padded) volume: no weighting
        return predict(x.unsqueeze(0)).float()[0, :, :shape[0], :shape[1], :shape[2]].contiguous()
    weight = gaussian_weights(window, sigma_scale) if gaussian else torch.ones(window)
    total, norm = None, torch.zeros(padded)
    for i, j, k in corners:
        sl = (slice(i, i + window[0]), slice(j, j + window[1]), slice(k, k + window[2]))
        out = predict(x[(slice(None),) + sl].unsqueeze(0)).float()[0]
        if total is None:
            total = torch.zeros((out.shape[0],) + tuple(padded))
        total[(slice(None),) + sl] += out * weight
        norm[sl] += weight
    total /= norm
    return total[:, :shape[0], :shape[1], :shape[2]].contiguous()


def predict_image(model, x, plan, tta="xy", window="auto", overlap=0.5):
    """Region probabilities (3,D,H,W) of `model` on a preprocessed image (C,D,H,W)
    (predict_image: sigmoid of the logits, mirror TTA, sliding window), in fp32."""
    def forward(batch):
        return torch.sigmoid(model(batch).float())
    w = resolve_window(window, plan, list(x.shape[1:]), model.stride())
    with torch.no_grad():
        return sliding_window(x, with_mirror_tta(forward, tta), w, overlap)


# --- probabilities to labels (infer/postprocess.cpp) ---

def regions_to_labels(probs, threshold=0.5):
    """(3,D,H,W) WT, TC, ET -> internal labels uint8: 2 where WT > t, then 1 where TC > t, then 4
    where ET > t (later regions override) (regions_to_labels)."""
    p = torch.as_tensor(probs).float()
    labels = torch.zeros(p.shape[1:], dtype=torch.uint8)
    labels[p[0] > threshold] = 2
    labels[p[1] > threshold] = 1
    labels[p[2] > threshold] = 4
    return labels.numpy()


def postprocess_labels(labels, spacing, et_min_mm3=0.0, min_component_fraction=0.0,
                       min_component_mm3=0.0):
    """In place on internal labels: removes tumour components (26-connected) smaller than
    max(fraction · tumour, mm3 / voxel), then ET below et_min_mm3 in all becomes NCR (1)
    (postprocess_labels; all off by default, as in `kdseg predict`). Needs scipy when on."""
    voxel_mm3 = float(np.prod(spacing))
    if min_component_fraction > 0 or min_component_mm3 > 0:
        from scipy import ndimage
        tumour = labels != 0
        comp, _ = ndimage.label(tumour, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(comp.ravel())
        min_voxels = max(min_component_fraction * tumour.sum(), min_component_mm3 / voxel_mm3)
        small = sizes < min_voxels
        small[0] = False
        labels[small[comp]] = 0
    if et_min_mm3 > 0:
        et = labels == 4
        if 0 < et.sum() * voxel_mm3 < et_min_mm3:
            labels[et] = 1
    return labels


# --- the whole case (infer/ensemble.cpp Ensemble::predict_case, infer/predict.cpp) ---

def predict_probabilities(models, image, spacing, tta="xy", window="auto", overlap=0.5,
                          weights=None):
    """(3,X,Y,Z) float32 tensor: the weighted mean of the members' region probabilities on the
    case's grid, clamped to [0,1] (Ensemble::predict_case). `models`: a checkpoint path, a
    (module, plan) pair, or a list of those; `image` (4,X,Y,Z) T1, T1ce, T2, FLAIR."""
    if isinstance(models, (str, tuple)) or hasattr(models, "__fspath__"):
        models = [models]
    weights = weights or [1.0] * len(models)
    if len(weights) != len(models):
        raise ValueError("%d weight(s) for %d model(s)" % (len(weights), len(models)))
    total, sum_w = None, 0.0
    for member, w in zip(models, weights):
        model, plan = load(member) if not isinstance(member, tuple) else member
        x, geometry = preprocess(image, spacing, plan)
        p = undo_geometry(predict_image(model, x, plan, tta, window, overlap), geometry)
        total = p.mul_(w) if total is None else total.add_(p, alpha=w)
        sum_w += w
    return total.div_(sum_w).clamp_(0, 1)


def predict_case(models, images, spacing=None, out=None, tta="xy", window="auto", overlap=0.5,
                 threshold=0.5, labels="brats2021", weights=None, **postprocess):
    """The label map `kdseg predict` writes for one case, as a uint8 numpy array.

    models     a checkpoint path, a (module, plan) pair from kdseg.load, or a list (an ensemble)
    images     four NIfTI paths T1, T1ce, T2, FLAIR (read with nibabel; the result is in the
               files' voxel order), or four arrays / one (4,X,Y,Z) array on one grid with
               `spacing` (mm, 3 values), taken in RAS+ voxel order (the result is on that grid)
    out        files only: also write the labels there with the T1 file's affine and header
    tta, window, overlap, threshold, weights: as kdseg predict's --tta (none|xy|all), --window
               (auto|plan|whole|DxHxW), --overlap, --threshold, --weights
    The network runs in fp32, as `kdseg predict --precision fp32`. (kdseg predict's default,
    --precision auto, is bf16 on a CPU with AVX-512 BF16 or AMX: a few voxels near the threshold
    then differ.)
    labels     the convention of the values returned: brats2021 {0,1,2,4} (kdseg's internal
               one, BraTS 2018-2021), brats2023, msd or nnunet
    postprocess et_min_mm3, min_component_fraction, min_component_mm3 (off, as in kdseg predict)
    """
    if labels not in LABEL_CONVENTIONS:
        raise ValueError('unknown label convention "%s": one of %s'
                         % (labels, ", ".join(LABEL_CONVENTIONS)))
    ref = None
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in images):
        image, spacing, ref = read_case(images)
    else:
        if spacing is None:
            raise ValueError("arrays need their spacing (mm), e.g. spacing=(1, 1, 1)")
        image = np.stack([np.asarray(i, dtype=np.float32) for i in images])
        spacing = tuple(float(s) for s in spacing)
    if out is not None and ref is None:
        raise ValueError("out= needs the input files (their affine and header)")
    probs = predict_probabilities(models, image, spacing, tta, window, overlap, weights)
    result = postprocess_labels(regions_to_labels(probs, threshold), spacing, **postprocess)
    lut = np.zeros(256, dtype=np.uint8)
    for internal, value in LABEL_CONVENTIONS[labels].items():
        lut[internal] = value
    result = lut[result]
    if ref is not None:
        result = to_file_order(result, ref)
        if out is not None:
            write_labels(out, result, ref)
    return result
