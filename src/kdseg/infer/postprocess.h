#pragma once
// From region probabilities to a BraTS label map, and the clean-up after it (docs/design.md §4):
// each step a named option, sizes in mm³ so that they mean the same at any spacing.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

namespace kdseg {

// probs (3,D,H,W) WT, TC, ET in [0,1] -> internal labels (D,H,W) uint8: 2 where WT > t, then 1
// where TC > t, then 4 where ET > t (nested, as the authors' code: later regions override).
at::Tensor regions_to_labels(const at::Tensor& probs, double threshold = 0.5);

struct PostprocessOptions {
  double et_min_mm3 = 0;              // ET below this total volume becomes NCR (1), e.g. 500
  double min_component_fraction = 0;  // tumour (WT) components smaller than this share of the
                                      // whole tumour are removed, e.g. 0.1
  double min_component_mm3 = 0;       // and those smaller than this volume, e.g. 100
};

// 26-connected components of the non-zero voxels of `mask` (x fastest, dims {nx,ny,nz}): a
// component index per voxel (0 = background, 1.. = components) and each component's size.
std::vector<int32_t> connected_components(const uint8_t* mask, const std::array<int64_t, 3>& dim,
                                          std::vector<int64_t>* sizes);

// Applies the options in place to internal labels {0,1,2,4} (x fastest). Returns the number of
// voxels changed.
int64_t postprocess_labels(uint8_t* labels, const std::array<int64_t, 3>& dim,
                           const std::array<double, 3>& spacing, const PostprocessOptions& opt);

}  // namespace kdseg
