#pragma once
// Image<T>: voxels plus the geometry they came with (docs/design.md §7 "Geometry").
//
// Inside kdseg every image is held in one canonical orientation, RAS+ (orientation.h). `source`
// keeps the header of the file the voxels were read from and `to_canonical` how its axes were
// permuted and flipped, so that a result written "like" that input lands in the input's own
// orientation with its own qform, sform and pixdim (docs/design.md §1).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kdseg/io/nifti_header.h"
#include "kdseg/io/orientation.h"

namespace kdseg {

template <class T>
struct Image {
  std::array<int64_t, 3> dim{0, 0, 0};     // voxels along canonical (x, y, z), e.g. 240,240,155
  int64_t n_channels = 1;                  // 4th NIfTI dimension, e.g. 4 modalities
  std::array<double, 3> spacing{1, 1, 1};  // mm along canonical (x, y, z), e.g. 1,1,1
  std::vector<T> data;                     // x fastest, then y, z, channel
  NiftiHeader source;                      // header of the file read (geometry to write back)
  AxisMap to_canonical;                    // file axes -> canonical axes

  int64_t n_voxels() const { return dim[0] * dim[1] * dim[2]; }
  T* channel(int64_t c) { return data.data() + c * n_voxels(); }
  const T* channel(int64_t c) const { return data.data() + c * n_voxels(); }
  T& at(int64_t x, int64_t y, int64_t z, int64_t c = 0) {
    return data[((c * dim[2] + z) * dim[1] + y) * dim[0] + x];
  }
  const T& at(int64_t x, int64_t y, int64_t z, int64_t c = 0) const {
    return data[((c * dim[2] + z) * dim[1] + y) * dim[0] + x];
  }
};

using Volume = Image<float>;      // intensities, probabilities
using LabelMap = Image<uint8_t>;  // label maps, masks

// "240x240x155": a grid's dims for messages.
inline std::string shape_text(const std::array<int64_t, 3>& d) {
  return std::to_string(d[0]) + "x" + std::to_string(d[1]) + "x" + std::to_string(d[2]);
}

// Same grid: same dims, and the same voxel-to-world mapping within `tol_mm` at the corners.
template <class A, class B>
bool same_grid(const Image<A>& a, const Image<B>& b, double tol_mm = 1e-3);

// Copies everything but the voxels: dims, spacing, source header, axis map.
template <class To, class From>
Image<To> like(const Image<From>& ref, int64_t n_channels = 1) {
  Image<To> out;
  out.dim = ref.dim;
  out.n_channels = n_channels;
  out.spacing = ref.spacing;
  out.source = ref.source;
  out.to_canonical = ref.to_canonical;
  out.data.assign(static_cast<size_t>(ref.n_voxels() * n_channels), To{});
  return out;
}

}  // namespace kdseg
