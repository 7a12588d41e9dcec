#pragma once
// Augmentation (paper §3, docs/design.md §4) and the extraction of one training sample
// from a cached case.
//
// Spatial transforms — scaling, rotation about the three axes, mirroring across X and Y (tensor
// dims D and H; never Z = W) — are composed into one affine map from patch voxels to case voxels,
// about the patch centre, in mm (so rotations stay rotations on anisotropic grids). Image,
// targets and ignore mask are then resampled together in ONE pass over a sub-box just covering
// the transformed patch: trilinear, align_corners = true semantics (voxel centres), zeros outside
// the volume — what at::grid_sample computes, written out in plain C++ over a channel-interleaved
// float copy of the box (fp16 read through a table, weights shared by all channels), ~10x
// faster than grid_sample on one thread. Label maps travel as their region one-hot channels
// WT, TC, ET (made from the labels while copying the box), interpolated linearly
// like the image and thresholded at 0.5 (so a region boundary moves exactly as the image's
// edges move, without nearest-neighbour's half-voxel jitter); soft targets are interpolated and
// not thresholded; the ignore mask is thresholded at 0.5. When the draw has no rotation and no
// scaling the affine map is a pure integer shift and flip, and the same result is produced by
// slicing and flipping (exact, ~20x cheaper).
// Intensity transforms act per channel on its non-zero (brain) voxels, after the spatial ones:
// x -> x * contrast + shift (background stays 0).
// Every augmentation has a probability; its draws come from the sample's augment_key only.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

#include "kdseg/data/sampler.h"

namespace kdseg {

struct AugmentOptions {
  bool enabled = true;                           // false: patches as sampled, e.g. for validation
  double p_scale = 0.2;                          // probability of scaling, e.g. 0.3
  std::array<double, 2> scale{0.9, 1.1};         // zoom range (>1 enlarges the anatomy)
  double p_rotate = 0.2;                         // probability of rotating, e.g. 0.3
  std::array<double, 3> rotate_deg{15, 15, 15};  // max |angle| about the D(x), H(y), W(z) axes
  double p_mirror = 0.5;                         // probability of each of the X and Y flips
  double p_shift = 1.0;                          // probability of the intensity shift
  double shift = 0.1;                            // per channel shift in [-shift, shift] (z-units)
  double p_contrast = 1.0;                       // probability of the contrast scaling
  std::array<double, 2> contrast{0.9, 1.1};      // per channel factor range
};
// Checks ranges (probabilities in [0,1], positive scale ...); throws kdseg::Error.
void validate_augment(const AugmentOptions& opt);

// One sample's drawn parameters.
struct AugmentParams {
  double scale = 1.0;                        // zoom factor
  std::array<double, 3> angle{0, 0, 0};      // radians about D, H, W
  std::array<bool, 2> mirror{false, false};  // flip D (X), flip H (Y)
  std::vector<double> shift, contrast;       // per channel (empty: none)
  bool spatial_identity() const {            // only flips: slicing suffices
    return scale == 1.0 && angle[0] == 0 && angle[1] == 0 && angle[2] == 0;
  }
};
AugmentParams draw_augment(const AugmentOptions& opt, uint64_t key, int64_t n_channels);

// The 3x3 row-major matrix M mapping a patch voxel offset (o - patch centre) to a case voxel
// offset: M = diag(1/spacing) R(angle) diag(spacing) / scale * diag(flips).
std::array<double, 9> spatial_matrix(const AugmentParams& a, const std::array<double, 3>& spacing);

// Resamples `volume` (K,D,H,W) float — any stack of channels — at the patch of `patch` voxels
// whose centre sits at case voxel `centre` (continuous), through `matrix`: out(o) =
// volume(centre + M (o - (patch-1)/2)), trilinear, 0 outside. Pure, for tests and the sampler.
at::Tensor affine_resample(const at::Tensor& volume, const std::array<double, 3>& centre,
                           const std::array<double, 9>& matrix,
                           const std::array<int64_t, 3>& patch);
// The (K, size) box of t (K,D,H,W) whose first voxel is `lo`; it may reach outside t: zeros
// there.
at::Tensor extract_box(const at::Tensor& t, const std::array<int64_t, 3>& lo,
                       const std::array<int64_t, 3>& size);
// The same map computed by LibTorch (affine_grid + grid_sample, align_corners = true, zeros
// outside; float32): the reference affine_resample is tested and benchmarked against.
at::Tensor affine_resample_grid_sample(const at::Tensor& volume,
                                       const std::array<double, 3>& centre,
                                       const std::array<double, 9>& matrix,
                                       const std::array<int64_t, 3>& patch);

struct Sample {
  at::Tensor image;   // (C,D,H,W) float32
  at::Tensor target;  // (3,D,H,W) float32 regions WT,TC,ET in [0,1] (0/1 unless soft targets)
  at::Tensor weight;  // (1,D,H,W) float32 = 1 - ignore; undefined when the case has no mask
};

// The sample `spec` of `c` (see sampler.h), augmented as drawn from spec.augment_key. An
// unlabelled case gets an all-zero target (a configuration check keeps those out of training).
Sample make_sample(const CachedCase& c, const SampleSpec& spec, const std::array<int64_t, 3>& patch,
                   const AugmentOptions& opt);

}  // namespace kdseg
