#pragma once
// Canonical orientation. NIfTI world space is RAS+ (+x towards the subject's Right, +y Anterior,
// +z Superior). Inside kdseg every image is held in RAS+ voxel order: canonical voxel axis 0
// increases towards Right, axis 1 towards Anterior, axis 2 towards Superior, whatever the file's
// voxel order (BraTS files are stored LPS). Only permutations and flips are used, never
// resampling, chosen as nibabel's as_closest_canonical chooses them, so mirroring canonical axes
// 0 and 1 ("X and Y") means the same anatomy (left-right, front-back) for every input.
#include <array>
#include <cstdint>
#include <string>

#include "kdseg/io/nifti_header.h"

namespace kdseg {

struct AxisMap {
  std::array<int, 3> perm{0, 1, 2};               // canonical axis a = file axis perm[a]
  std::array<bool, 3> flip{false, false, false};  // ... reversed when flip[a]
  bool identity() const {
    return perm == std::array<int, 3>{0, 1, 2} && !flip[0] && !flip[1] && !flip[2];
  }
};

// The permutation and flips that bring a file whose voxel-to-world matrix is `m` to RAS+.
AxisMap axis_map_to_ras(const Mat44& m);
// Axis codes of a matrix as letters, e.g. "LPS" for BraTS files, "RAS" for canonical.
std::string axis_codes(const Mat44& m);

// Rearranges `n_channels` volumes of file dims `file_dim` into canonical order (or back).
// `out_dim` receives the canonical dims.
template <class T>
void to_canonical(const T* in, const std::array<int64_t, 3>& file_dim, int64_t n_channels,
                  const AxisMap& map, T* out, std::array<int64_t, 3>& out_dim);
template <class T>
void from_canonical(const T* in, const std::array<int64_t, 3>& canon_dim, int64_t n_channels,
                    const AxisMap& map, T* out, std::array<int64_t, 3>& file_dim);

}  // namespace kdseg
