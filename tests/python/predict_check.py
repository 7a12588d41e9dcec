#!/usr/bin/python3
"""kdseg.predict_case against `kdseg predict` (run by tests/e2e/test_python_predict.cpp).

  PYTHONPATH=python /usr/bin/python3 tests/python/predict_check.py CHECKPOINT CASE_DIR CPP_LABELS
      [--tta none|xy|all] [--window auto|DxHxW] [--out FILE] [--max-fraction F]

CASE_DIR holds <ID>_t1/_t1ce/_t2/_flair.nii.gz; CPP_LABELS is the label map the kdseg binary wrote
for it with the same checkpoint and options, in fp32 (--precision fp32). Segments the case with
kdseg.predict_case (writing --out when given, and checking that file holds the same labels),
compares the two label maps voxel by voxel and exits 1 when they differ in more than max-fraction
of the tumour voxels (the binary's non-zero voxels), when the grids differ, or when the binary's
map lacks any of 1, 2, 4 (the comparison would not test every region).
"""
import argparse
import glob
import os
import sys
import time

import nibabel as nib
import numpy as np

import kdseg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("case_dir")
    ap.add_argument("cpp_labels")
    ap.add_argument("--tta", default="xy")
    ap.add_argument("--window", default="auto")
    ap.add_argument("--out", help="also write the Python labels here and check the file")
    ap.add_argument("--max-fraction", type=float, default=1e-3,
                    help="differing voxels allowed, as a share of the tumour voxels")
    args = ap.parse_args()

    files = []
    for m in ("t1", "t1ce", "t2", "flair"):
        hit = glob.glob(os.path.join(args.case_dir, "*_%s.nii.gz" % m))
        if len(hit) != 1:
            sys.exit("%s: expected one *_%s.nii.gz, found %d" % (args.case_dir, m, len(hit)))
        files.append(hit[0])

    t0 = time.time()
    got = kdseg.predict_case(args.checkpoint, files, out=args.out, tta=args.tta,
                             window=args.window)
    seconds = time.time() - t0
    cpp = nib.load(args.cpp_labels)
    want = np.asarray(cpp.dataobj).astype(np.uint8)
    name = os.path.basename(args.case_dir.rstrip("/"))
    if got.shape != want.shape:
        sys.exit("%s: Python labels %s, kdseg predict wrote %s" % (name, got.shape, want.shape))
    if not np.allclose(cpp.affine, nib.load(files[0]).affine):
        sys.exit("%s: kdseg predict's labels are not on the input grid" % name)
    if args.out:
        written = nib.load(args.out)
        if not np.array_equal(np.asarray(written.dataobj), got) or \
                not np.allclose(written.affine, cpp.affine):
            sys.exit("%s: %s does not hold the returned labels on the input grid"
                     % (name, args.out))

    counts = {int(v): int(n) for v, n in zip(*np.unique(want, return_counts=True))}
    tumour = int((want != 0).sum())
    differ = int((got != want).sum())
    allowed = args.max_fraction * tumour
    missing = [v for v in (1, 2, 4) if counts.get(v, 0) == 0]
    ok = differ <= allowed and not missing
    print("%s (tta %s, window %s): %d of %d tumour voxels differ (%.4f %%, allowed %.1f), "
          "kdseg predict's labels %s, Python %.1f s: %s"
          % (name, args.tta, args.window, differ, tumour, 100.0 * differ / max(tumour, 1),
             allowed, counts, seconds, "ok" if ok else "FAIL"))
    if missing:
        print("%s: kdseg predict's labels lack %s: the comparison does not cover every region"
              % (name, missing))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
