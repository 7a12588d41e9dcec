"""Lesion-wise Dice and HD95 written a second way, with scipy, for tests/eval/test_lesion.cpp.

The definition is kdseg's (src/kdseg/eval/lesion.h): the BraTS 2023 challenge's lesion matching,
with HD95 between boundary voxels (6-neighbour erosion, zero border; numpy's linear 95th
percentile) as kdseg's whole-volume HD95. Everything here works on the whole grid, the obvious
way, where the C++ crops and dilates per lesion: agreement checks those shortcuts too.

usage: lesion_reference.py DIR N NX NY NZ SX SY SZ
  reads DIR/case<i>.bin (prediction then reference, uint8, x fastest) and prints a JSON list of
  {"dice", "hd95", "tp", "fn", "fp", "small"}; case i uses dilation 1 when i % 3 == 2, else 3,
  and a minimum volume of 20 mm³ for odd i, else 50.
"""
import json
import sys

import numpy as np
from scipy import ndimage

MISSED = 374.0


def hd95(a, b, spacing):
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return 373.12866
    cross = ndimage.generate_binary_structure(3, 1)
    edge_a = a & ~ndimage.binary_erosion(a, cross, border_value=0)
    edge_b = b & ~ndimage.binary_erosion(b, cross, border_value=0)
    to_b = ndimage.distance_transform_edt(~edge_b, sampling=spacing)[edge_a]
    to_a = ndimage.distance_transform_edt(~edge_a, sampling=spacing)[edge_b]
    return max(np.percentile(to_b, 95), np.percentile(to_a, 95))


def lesion_wise(pred, ref, spacing, dilation, min_volume):
    full = np.ones((3, 3, 3), bool)  # 26-connectivity
    grow = ndimage.generate_binary_structure(3, 2)  # the 18-neighbourhood

    def dilate(m):
        return ndimage.binary_dilation(m, grow, iterations=dilation) if dilation else m.copy()

    pred_cc, n_pred = ndimage.label(pred, full)
    joined, n_joined = ndimage.label(dilate(ref), full)
    lesions = np.where(ref, joined, 0)  # each reference voxel: the dilated component it lies in
    voxel = float(np.prod(spacing))
    used = set()
    dices, hds, out = [], [], {"tp": 0, "fn": 0, "fp": 0, "small": 0}
    for lesion in range(1, n_joined + 1):
        own = lesions == lesion
        if not own.any():
            continue
        hits = set(np.unique(pred_cc[dilate(own)])) - {0}
        used |= hits
        mine = np.isin(pred_cc, list(hits)) if hits else np.zeros_like(own)
        if hits:
            d = 2.0 * (mine & own).sum() / (mine.sum() + own.sum())
            h = hd95(mine, own, spacing)
        else:
            d, h = 0.0, MISSED
        if own.sum() * voxel <= min_volume:
            out["small"] += 1
            continue
        dices.append(d)
        hds.append(h)
        out["tp" if hits else "fn"] += 1
    out["fp"] = n_pred - len(used)
    terms = len(dices) + out["fp"]
    out["dice"] = sum(dices) / terms if terms else 1.0
    out["hd95"] = (sum(hds) + MISSED * out["fp"]) / terms if terms else 0.0
    return out


def main():
    folder, n = sys.argv[1], int(sys.argv[2])
    nx, ny, nz = (int(v) for v in sys.argv[3:6])
    spacing = tuple(float(v) for v in sys.argv[6:9])  # (x, y, z)
    results = []
    for i in range(n):
        raw = np.fromfile(f"{folder}/case{i}.bin", np.uint8)
        # x fastest in the file: as (z, y, x) arrays; spacing reversed to match.
        pred = raw[: nx * ny * nz].reshape(nz, ny, nx).astype(bool)
        ref = raw[nx * ny * nz :].reshape(nz, ny, nx).astype(bool)
        results.append(
            lesion_wise(pred, ref, spacing[::-1], 1 if i % 3 == 2 else 3, 20 if i % 2 else 50)
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
