#pragma once
// NiftiHeader: every field of a NIfTI-1 or NIfTI-2 header, widened to NIfTI-2 types, so that a file
// read in either version can be written back with its geometry untouched (qform, sform, pixdim,
// units and codes are copied, never reset).
#include <array>
#include <cstdint>
#include <string>

namespace kdseg {

using Mat44 = std::array<std::array<double, 4>, 4>;  // row-major voxel (i,j,k,1) -> world mm

// NIfTI datatype codes kdseg reads and writes.
enum NiftiType : int32_t {
  kNiftiUInt8 = 2,
  kNiftiInt16 = 4,
  kNiftiInt32 = 8,
  kNiftiFloat32 = 16,
  kNiftiFloat64 = 64,
  kNiftiInt8 = 256,
  kNiftiUInt16 = 512,
  kNiftiUInt32 = 768,
};

struct NiftiHeader {
  int version = 1;  // 1 or 2: the version of the file read or to write
  std::array<int64_t, 8> dim{3, 1, 1, 1, 1, 1, 1, 1};    // dim[0] = rank, e.g. 3,240,240,155,1,...
  std::array<double, 8> pixdim{1, 1, 1, 1, 0, 0, 0, 0};  // pixdim[0] = qfac, [1..3] mm
  int32_t datatype = kNiftiFloat32;                      // e.g. kNiftiInt16
  int32_t bitpix = 32;                                   // bits per voxel, e.g. 16
  int64_t vox_offset = 352;             // bytes before the voxels, e.g. 352 (NIfTI-1 .nii)
  double scl_slope = 0, scl_inter = 0;  // value = slope * stored + inter when slope != 0
  double cal_max = 0, cal_min = 0;
  double slice_duration = 0, toffset = 0;
  int64_t slice_start = 0, slice_end = 0;
  int32_t slice_code = 0;
  int32_t xyzt_units = 2;  // 2 = mm (NIFTI_UNITS_MM)
  int32_t intent_code = 0;
  double intent_p1 = 0, intent_p2 = 0, intent_p3 = 0;
  std::string intent_name;                 // up to 16 chars
  std::string descrip;                     // up to 80 chars
  std::string aux_file;                    // up to 24 chars
  int32_t qform_code = 0, sform_code = 0;  // 0 unknown, 1 scanner, 2 aligned, 3 talairach, 4 mni
  double quatern_b = 0, quatern_c = 0, quatern_d = 0;
  double qoffset_x = 0, qoffset_y = 0, qoffset_z = 0;
  std::array<std::array<double, 4>, 3> srow{{{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}}};
  uint8_t dim_info = 0;
  bool swapped = false;  // the file was of the other byte order
};

// Bytes per voxel of a datatype code; 0 when kdseg does not support it.
int bytes_per_voxel(int32_t datatype);
const char* datatype_name(int32_t datatype);

// The voxel-to-world matrices the header defines (NIfTI-1 "method 2" and "method 3").
Mat44 qform_matrix(const NiftiHeader& h);
Mat44 sform_matrix(const NiftiHeader& h);
// The matrix kdseg uses: sform when sform_code > 0, else qform when qform_code > 0, else the
// pixdim scaling ("method 1").
Mat44 affine(const NiftiHeader& h);
// Voxel size (mm) along file axes i, j, k: the lengths of the matrix's first three columns.
std::array<double, 3> affine_spacing(const Mat44& m);
// Writes a matrix into the header as both sform and qform (codes set to `code`, e.g. 1 scanner);
// the qform keeps the rotation part of `m` (shears and non-orthogonal parts only in the sform).
void set_affine(NiftiHeader& h, const Mat44& m, int32_t code = 1);
// A fresh 3D/4D header for a grid of `dim` voxels with the given affine (used by writers of new
// images such as the synthetic cohort).
NiftiHeader make_header(const std::array<int64_t, 3>& dim, const Mat44& affine,
                        int64_t n_channels = 1, int32_t datatype = kNiftiFloat32);

}  // namespace kdseg
