#pragma once
// Preprocessing (docs/design.md §4): what turns a loaded case into network input, and how a
// prediction made on that input goes back onto the case's own grid.
//
// Tensor axis convention of the whole data pipeline: a volume is (C,D,H,W) with D, H, W the
// canonical RAS+ axes x, y, z of io/image.h (the plan's "(D,H,W)": a 144,144,128 patch is 128
// voxels along z, the axial axis). So "mirroring in X and Y" flips tensor dims D and H, never W.
//
// The steps, in order, for a PreprocessPlan (models/plan.h, the checkpoint's record of them):
//   1. channels in plan.channels order (names of io/dataset.h kModalityNames);
//   2. crop (plan.crop = "brain_bbox"): to the bounding box of the voxels that are non-zero in
//      any modality; the box is recorded (CropBox) so that predictions can be put back;
//   3. resampling of the cropped box (optional): to plan.fixed_shape when set (e.g. the
//      cascade's 128³), else to plan.spacing on the axes where it is > 0; images trilinear,
//      label maps by linear interpolation of their one-hot classes then argmax (no aliasing, no
//      shifted borders); both with align_corners = false (box edges map onto box edges);
//   4. normalisation (plan.normalization = "zscore_nonzero"): per channel, z-score over that
//      channel's non-zero voxels; zero voxels (background) stay exactly 0.
// undo_geometry() inverts 2-3 for probability maps (linear resampling back, zero outside the box).
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "kdseg/io/dataset.h"
#include "kdseg/models/plan.h"

namespace kdseg {

// A box of voxels on a grid, along (D,H,W) = canonical (x,y,z).
struct CropBox {
  std::array<int64_t, 3> lo{0, 0, 0};    // first voxel kept, e.g. 42,30,12
  std::array<int64_t, 3> hi{0, 0, 0};    // one past the last voxel kept, e.g. 190,212,140
  std::array<int64_t, 3> full{0, 0, 0};  // dims of the uncropped grid, e.g. 240,240,155
  std::array<int64_t, 3> size() const { return {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}; }
  bool empty() const { return hi[0] <= lo[0] || hi[1] <= lo[1] || hi[2] <= lo[2]; }
};

// Where a preprocessed case sits on its source grid: enough to undo crop and resampling.
struct CaseGeometry {
  CropBox box;                                    // in source voxels
  std::array<int64_t, 3> shape{0, 0, 0};          // preprocessed (D,H,W), e.g. 128,128,128
  std::array<double, 3> source_spacing{1, 1, 1};  // mm of the source grid
  std::array<double, 3> spacing{1, 1, 1};         // mm of the preprocessed grid
};

// A case ready for sampling: all tensors CPU, contiguous, on one (D,H,W) grid.
struct PreparedCase {
  std::string id;
  at::Tensor image;   // (C,D,H,W) float32, normalised, background exactly 0
  at::Tensor labels;  // (D,H,W) uint8 internal labels {0,1,2,4}; undefined when unlabelled
  at::Tensor soft;    // (3,D,H,W) float32 soft targets WT,TC,ET in [0,1]; undefined when none
  at::Tensor ignore;  // (D,H,W) uint8, 1 = excluded from the loss; undefined when none
  CaseGeometry geometry;
};

// Checks the plan's fields that preprocessing reads; throws kdseg::Error naming `where`.
void validate_plan(const PreprocessPlan& plan, const std::string& where = "preprocessing plan");

// --- pure steps (tensors are CPU; each returns a new tensor or a view) ---

// Image<T> (x fastest) <-> (C,D,H,W) tensor; the copy back keeps `like`'s geometry.
at::Tensor volume_to_tensor(const Volume& v);  // float32 (C,D,H,W)
at::Tensor volume_view(const Volume& v);       // the same as a strided view of v's voxels (no copy)
at::Tensor labels_to_tensor(const LabelMap& l);                           // uint8 (D,H,W)
Volume tensor_to_volume(const at::Tensor& t, const Volume& like_this);    // t (C,D,H,W) or (D,H,W)
LabelMap tensor_to_labels(const at::Tensor& t, const Volume& like_this);  // t (D,H,W) integer

// Bounding box of the voxels non-zero in any channel of image (C,D,H,W); empty() when none.
CropBox nonzero_bbox(const at::Tensor& image);
// The box's voxels of t (...,D,H,W) (a view).
at::Tensor crop(const at::Tensor& t, const CropBox& box);
// t (...,d,h,w) with (d,h,w) == box.size() placed into a zero grid of box.full.
at::Tensor uncrop(const at::Tensor& t, const CropBox& box);

// The preprocessed (D,H,W) of a cropped box of `size` voxels at `spacing` mm under `plan`.
std::array<int64_t, 3> planned_shape(const std::array<int64_t, 3>& size,
                                     const std::array<double, 3>& spacing,
                                     const PreprocessPlan& plan);
// Linear (trilinear) resampling of (C,D,H,W) float to `shape`, align_corners = false.
at::Tensor resample_linear(const at::Tensor& t, const std::array<int64_t, 3>& shape);
// Label map (D,H,W) uint8 to `shape`: one-hot of labels {0,1,2,4}, linear, argmax.
at::Tensor resample_labels(const at::Tensor& labels, const std::array<int64_t, 3>& shape);
// In place, on a contiguous float32 (C,D,H,W) tensor: per channel z-score over the channel's
// non-zero voxels; zeros stay 0 (a channel with fewer than 2 non-zero voxels or zero spread is
// only centred).
void zscore_nonzero_(at::Tensor& image);
// Internal labels (D,H,W) -> regions WT={1,2,4}, TC={1,4}, ET={4} as (3,D,H,W) float32.
at::Tensor labels_to_regions(const at::Tensor& labels);

// --- whole case ---

// Steps 1-4 on a loaded case (io/dataset.h load_case). `soft` (3 channels WT,TC,ET in [0,1]) and
// `ignore` (non-zero = ignore) are optional pseudo-label extras on the case's grid; they follow
// the same crop and (linear; ignore thresholded at 0.5) resampling. Throws kdseg::Error naming
// the case when it has no non-zero voxel.
PreparedCase preprocess_case(const CaseData& data, const PreprocessPlan& plan,
                             const Volume* soft = nullptr, const LabelMap* ignore = nullptr);

// Puts per-voxel maps made on the preprocessed grid, t (C,D,H,W) float, back onto the source
// grid: linear resampling to the box size, then zeros outside the box -> (C, full...).
at::Tensor undo_geometry(const at::Tensor& t, const CaseGeometry& geometry);

}  // namespace kdseg
