"""Cross-reader check of kdseg's NIfTI I/O against nibabel (Debian's python3-nibabel).

  nibabel_roundtrip.py write DIR   # nibabel writes test files + their canonical voxels (.f32)
  nibabel_roundtrip.py check DIR   # nibabel reads kdseg's files and compares with kdseg's dumps

A dump <name>.f32 holds the canonical (RAS, as_closest_canonical) voxels as little-endian float32
in x-fastest order, preceded by a line-free header: 4 int64 dims (x, y, z, t).
"""
import sys
import numpy as np
import nibabel as nib


def dump(path, arr):
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[..., None]
    with open(path, "wb") as f:
        np.array(arr.shape, dtype="<i8").tofile(f)
        # x fastest: Fortran order of (x, y, z, t)
        np.asarray(arr, dtype="<f4").ravel(order="F").tofile(f)


def load_dump(path):
    with open(path, "rb") as f:
        shape = tuple(np.fromfile(f, dtype="<i8", count=4))
        data = np.fromfile(f, dtype="<f4")
    return data.reshape(shape, order="F")


def oblique_affine():
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 0.9, 2.0])
    aff[:3, 3] = [-30.0, 12.5, 7.0]
    return aff


def write(d):
    rng = np.random.default_rng(0)
    # NIfTI-1 int16, BraTS-like LPS, scl_slope/inter set.
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff[1, 3] = 15
    data = rng.integers(0, 300, size=(9, 7, 5)).astype(np.int16)
    img = nib.Nifti1Image(data, aff)
    img.header.set_slope_inter(2.0, -1.0)
    img.set_qform(aff, 1)
    img.set_sform(aff, 1)
    nib.save(img, f"{d}/nb_int16_lps.nii.gz")
    dump(f"{d}/nb_int16_lps.f32", nib.as_closest_canonical(nib.load(f"{d}/nb_int16_lps.nii.gz")).get_fdata())
    # NIfTI-2 float64, oblique.
    data = rng.normal(size=(6, 8, 4)).astype(np.float64)
    img = nib.Nifti2Image(data, oblique_affine())
    nib.save(img, f"{d}/nb_f64_oblique.nii")
    dump(f"{d}/nb_f64_oblique.f32", nib.as_closest_canonical(img).get_fdata())
    # Big-endian int32, permuted axes (file axis 0 = anterior).
    aff = np.array([[0, -1.0, 0, 5], [1.0, 0, 0, -3], [0, 0, 1.5, 0], [0, 0, 0, 1]])
    data = rng.integers(-1000, 1000, size=(5, 6, 4)).astype(">i4")
    hdr = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(data, aff, header=hdr)
    nib.save(img, f"{d}/nb_int32_bigendian.nii")
    dump(f"{d}/nb_int32_bigendian.f32", nib.as_closest_canonical(nib.load(f"{d}/nb_int32_bigendian.nii")).get_fdata())
    # 4D uint8.
    data = rng.integers(0, 5, size=(4, 5, 3, 4)).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), f"{d}/nb_uint8_4d.nii.gz")
    dump(f"{d}/nb_uint8_4d.f32", data)
    print("wrote")


def check(d):
    import glob, os
    n = 0
    for nii in sorted(glob.glob(f"{d}/kd_*.nii*")):
        base = nii.split(".nii")[0]
        img = nib.load(nii)
        expect = load_dump(base + ".f32")
        got = nib.as_closest_canonical(img).get_fdata()
        if got.ndim == 3:
            got = got[..., None]
        assert got.shape == expect.shape, (nii, got.shape, expect.shape)
        assert np.allclose(got, expect, atol=1e-5), (nii, np.abs(got - expect).max())
        aff = np.loadtxt(base + ".affine")
        assert np.allclose(img.affine, aff, atol=1e-4), (nii, img.affine, aff)
        if img.header["qform_code"] > 0:  # the qform kdseg keeps or derives matches the affine
            assert np.allclose(img.get_qform(), aff, atol=1e-4), (nii, img.get_qform(), aff)
        n += 1
    assert n >= 3, f"only {n} kdseg files found"
    print(f"checked {n}")


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
