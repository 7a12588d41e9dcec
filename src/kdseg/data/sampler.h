#pragma once
// Where each training patch comes from (docs/design.md §4 "Sampling").
//
// Sample `index` of optimiser step `step` is decided by draw(step, index) from a generator keyed
// only by (seed, step, index) (random.h): the same whatever the number of loader threads, after
// a resume, or on any rank of a distributed run (rank r of w draws indices r*B .. r*B+B-1 of the
// global batch; the loader does that). In order, the draws are:
//   1. the pool (data folder), with probability proportional to its weight (`--data DIR:W`);
//   2. a case of that pool, uniformly;
//   3. foreground or not: Bernoulli(foreground_share) (nnU-Net uses 1/3). A foreground patch is
//      centred on a voxel with label > 0 (clamped to stay inside the volume); a case with an
//      empty label map (e.g. a pseudo-label without tumour) falls back to a random patch;
//   4. a random patch: a brain voxel (non-zero in some channel), uniformly among the cache's
//      point sample, then a corner uniformly among those whose patch contains that voxel — so
//      every patch contains brain;
//   5. a 64-bit key for the augmentation's own draws (augment.h).
// Patch larger than a case: along an axis where the patch exceeds the cropped brain box, the
// patch is padded with zeros (image 0 = background, labels 0) — nnU-Net does the same. A patch
// larger than the case's whole scan (the uncropped grid at the preprocessed spacing; for a
// fixed-shape plan at least plan.fixed_shape) is a configuration error: check_patch() throws
// naming the case, so e.g. patch 128 on a 3 mm scan of 52 slices fails with a hint.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kdseg/data/cache.h"

namespace kdseg {

struct SamplerOptions {
  std::array<int64_t, 3> patch{128, 128, 128};  // voxels (D,H,W), e.g. 144,144,128
  int64_t batch = 2;                            // samples per step (per rank), e.g. 2
  double foreground_share = 0.33;               // share of patches centred on tumour, e.g. 0.5
  uint64_t seed = 2019;                         // e.g. 7
};

// The cases of one data folder and its share of the samples.
struct SamplePool {
  std::string name;                                      // the folder, for messages
  double weight = 1.0;                                   // e.g. 1 (labelled), 0.5 (pseudo)
  std::vector<std::shared_ptr<const CachedCase>> cases;  // the training split's cases
};

// One sample's decisions (everything else it needs is in the cached case).
struct SampleSpec {
  int64_t step = 0, index = 0;             // what it was drawn for
  int64_t pool = 0, case_index = 0;        // which case
  bool foreground = false;                 // centred on tumour
  std::array<int64_t, 3> corner{0, 0, 0};  // first voxel of the patch (may be < 0: padding)
  uint64_t augment_key = 0;                // seeds augment.h's draws
};

// --- pure helpers (unit-tested) ---
// Corner of a patch of `patch` voxels on an axis of `size` voxels that contains voxel `point`,
// the u in [0,1)-th of the allowed ones. Allowed corners: [0, size-patch] when the patch fits,
// [size-patch, 0] when it does not (padding shared between both ends as u decides).
int64_t corner_containing(int64_t point, int64_t size, int64_t patch, double u);
// Corner of a patch centred on `point`, clamped to the allowed corners.
int64_t corner_centred(int64_t point, int64_t size, int64_t patch);
// The largest patch a case allows (its whole scan on the preprocessed grid; see above).
std::array<int64_t, 3> max_patch(const CaseGeometry& g);
// Throws kdseg::Error naming `where` when `patch` exceeds max_patch(g) on an axis.
void check_patch(const std::array<int64_t, 3>& patch, const CaseGeometry& g,
                 const std::string& where);

class Sampler {
 public:
  // Checks the options, that every pool has cases and a weight > 0, and check_patch for every
  // case. Throws kdseg::Error.
  Sampler(std::vector<SamplePool> pools, SamplerOptions opt);

  SampleSpec draw(int64_t step, int64_t index) const;
  const CachedCase& case_of(const SampleSpec& s) const {
    return *pools_[s.pool].cases[s.case_index];
  }

  const SamplerOptions& options() const { return opt_; }
  const std::vector<SamplePool>& pools() const { return pools_; }
  int64_t n_channels() const { return n_channels_; }
  bool any_ignore() const { return any_ignore_; }  // some case has an ignore mask

 private:
  std::vector<SamplePool> pools_;
  SamplerOptions opt_;
  std::vector<double> cumulative_;  // normalised cumulative pool weights
  int64_t n_channels_ = 4;
  bool any_ignore_ = false;
};

}  // namespace kdseg
