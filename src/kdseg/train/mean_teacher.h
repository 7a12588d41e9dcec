#pragma once
// The online semi-supervised part of `kdseg train --unlabelled DIR` (docs/training.md "Mean
// teacher"): beside the supervised loss on the labelled patches, every step
//   1. draws a batch of patches from the unlabelled cases, with the run's own augmentation (the
//      weak view: spatial transforms and a mild intensity change);
//   2. the mean teacher — an exponential moving average of the student's weights (Tarvainen &
//      Valpola 2017) — predicts them, without gradients;
//   3. its confident voxels (per region, max(p, 1 − p) ≥ threshold) become hard targets, the
//      others weigh 0 (FixMatch's confidence mask, Sohn et al. 2020);
//   4. the student sees a strong view of the same patches — more intensity change, Gaussian
//      noise and, with a probability, a box of each patch replaced by the same box of the next
//      patch of the batch (CutMix, as UniMatch does for segmentation), its targets and mask mixed
//      the same way — and learns the teacher's targets through the run's Dice + BCE loss;
//   5. the total loss is supervised + λ(step) · unlabelled, λ rising over the first `rampup`
//      share of the steps as exp(−5 (1 − t)²) (Laine & Aila 2017);
//   6. after the optimiser step the teacher moves towards the student: θ_t ← d θ_t + (1 − d) θ_s,
//      d = min(ema, 1 − 1/(step + 1)) so that the early teacher is not held back by the random
//      initialisation.
// The functions below are the pure parts of that, for the trainer and for tests.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace kdseg {

struct StrongAugmentOptions {
  double noise_sd = 0.1;                     // Gaussian noise on brain voxels (z units), e.g. 0.1
  std::array<double, 2> contrast{0.7, 1.3};  // per channel factor range on brain voxels
  double shift = 0.3;                        // per channel shift in [-shift, shift] (z units)
  double p_cutmix = 0.5;                     // probability per sample of a mixed-in box
  std::array<double, 2> cutmix_side{0.25, 0.5};  // the box's side as a share of the patch's
};

struct MeanTeacherOptions {
  std::vector<std::string> unlabelled;  // folders of unlabelled cases; empty = no mean teacher
  double weight = 1.0;                  // λ, the unlabelled loss's weight at full ramp, e.g. 1
  double ema = 0.99;                    // teacher decay per step, e.g. 0.99
  double threshold = 0.9;               // confidence a teacher voxel needs to be a target
  double rampup = 0.3;                  // share of the steps over which λ rises (0: none)
  int64_t batch = 0;                    // unlabelled patches per step; 0 = the run's batch
  StrongAugmentOptions strong;
  bool enabled() const { return !unlabelled.empty(); }
};

// Checks ranges (weight ≥ 0, ema and threshold in [0, 1), ...); throws kdseg::Error naming
// the flag.
void validate_mean_teacher(const MeanTeacherOptions& opt);

// λ of step `step` (0-based) of `steps`.
double consistency_weight(const MeanTeacherOptions& opt, int64_t step, int64_t steps);
// The decay after optimiser step `step` (0-based): min(ema, 1 − 1/(step + 1)).
double teacher_decay(const MeanTeacherOptions& opt, int64_t step);
// teacher ← decay · teacher + (1 − decay) · student for every parameter; buffers copied. Both
// modules of the same architecture (names and shapes checked), on the same device.
void update_teacher(torch::nn::Module& teacher, const torch::nn::Module& student, double decay);

struct StrongView {
  at::Tensor image;  // (B,C,D,H,W) the student's input
  at::Tensor mixed;  // (B,1,D,H,W) 1 where sample b shows sample (b+1) % B's box, else 0
};
// The strong view of a weak batch x (B,C,D,H,W) on the CPU, its draws from `key` alone.
// Intensity changes act on each sample's brain voxels (non-zero in some channel); background
// stays 0. With B = 1 there is no partner to mix in.
StrongView strong_view(const at::Tensor& x, uint64_t key, const StrongAugmentOptions& opt);
// t (B,K,D,H,W) mixed as strong_view mixed the images: t·(1 − m) + roll(t, 1 along B)·m.
at::Tensor mix_like(const at::Tensor& t, const at::Tensor& mixed);

struct ConsistencyTargets {
  at::Tensor target;  // (B,3,D,H,W) 1 where the teacher's p > 0.5
  at::Tensor weight;  // (B,3,D,H,W) 1 where max(p, 1 − p) ≥ threshold, else 0
};
ConsistencyTargets consistency_targets(const at::Tensor& teacher_logits, double threshold);

}  // namespace kdseg
