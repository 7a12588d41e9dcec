#pragma once
// The training losses (paper §2.1, docs/design.md §4), as pure functions of tensors.
//
// Inputs are LOGITS (what every kdseg network returns) and targets in [0,1]: hard labels (0/1)
// or soft ones (an ensemble's probabilities, for distillation). Shapes (B,C,D,H,W), C = 3
// regions (WT, TC, ET). An optional `weight` (B,1|C,D,H,W), broadcast over regions, weights each
// voxel; 0 excludes it (an ignore mask), e.g. where the teachers disagree. An undefined weight
// means all ones.
//
//   soft Dice (per sample b and region c, p = sigmoid(logits), g = target, w = weight):
//     dice[b,c] = (2 Σ w·p·g + ε) / (Σ w·p² + Σ w·g² + ε),  loss = mean over b,c of (1 − dice)
//     batch_dice: the sums run over the whole batch, loss = mean over c of (1 − dice[c])
//   BCE: for each region the mean over voxels of w·bce(p,g) / mean of w, then SUMMED over regions
//     (the paper: −1/N Σ_k Σ_voxels …); a region whose weights are all 0 adds 0.
//   total = dice_weight · dice + bce_weight · bce
#include <ATen/core/Tensor.h>

#include <vector>

namespace kdseg {

struct SegOutput;  // models/net.h

struct LossOptions {
  bool batch_dice = false;   // Dice over the whole batch (the authors' code) instead of per sample
  double dice_eps = 1e-5;    // ε in numerator and denominator: empty target + empty prediction = 1
  double dice_weight = 1.0;  // e.g. 1
  double bce_weight = 1.0;   // e.g. 1 (0 = Dice only)
  double vae_l2_weight = 0.1;  // resunet-vae reconstruction term (Myronenko: 0.1)
  double vae_kl_weight = 0.1;  // resunet-vae KL term (Myronenko: 0.1 on a KL sum divided by the
                               // D·H·W voxels; vae_kl_loss divides by C·D·H·W, so with 4
                               // channels 0.1 here acts as his 0.025 and 0.4 is his 0.1)
  std::vector<double> deep_supervision{0.2, 0.3, 0.4};  // cascade, coarse → fine (the last
                                                        // weights the full-resolution output)
};

struct LossTerms {
  at::Tensor total;   // scalar, what backward() is called on
  at::Tensor dice;    // scalar soft-Dice term (weighted sum over deep-supervision outputs)
  at::Tensor bce;     // scalar BCE term (idem)
  at::Tensor vae_l2;  // scalar, defined for resunet-vae in training mode only
  at::Tensor vae_kl;  // idem
};

// Soft Dice loss, see above. logits, target (B,C,D,H,W); weight broadcastable or undefined.
at::Tensor soft_dice_loss(const at::Tensor& logits, const at::Tensor& target,
                          const at::Tensor& weight = {}, bool batch_dice = false,
                          double eps = 1e-5);
// BCE from logits, voxel mean per region (weighted), summed over regions.
at::Tensor bce_loss(const at::Tensor& logits, const at::Tensor& target,
                    const at::Tensor& weight = {});
// dice_weight · soft_dice_loss + bce_weight · bce_loss, with both terms reported.
LossTerms dice_bce_loss(const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& weight = {}, const LossOptions& options = {});

// Myronenko's VAE terms for recon (B,C,D,H,W) of input (same shape), latent mu, logvar (B,Z):
//   L2 = mean over elements of (recon − input)²
//   KL = 1/N Σ_z (μ² + σ² − log σ² − 1), N = elements of one input (C·D·H·W), mean over B.
at::Tensor vae_l2_loss(const at::Tensor& recon, const at::Tensor& input);
at::Tensor vae_kl_loss(const at::Tensor& mu, const at::Tensor& logvar, int64_t n_input_elements);

// A target (or weight) brought to `size` (D,H,W) by average pooling over integer factors: hard
// labels become the fraction of the coarse voxel inside the region (the authors' choice).
at::Tensor downsample_to(const at::Tensor& target, const std::vector<int64_t>& size);

// Hard overlap per region at probability 0.5 (logit 0) over the voxels of weight > 0: a (C,3)
// float64 tensor of [true positives, predicted positives, target positives] (target > 0.5),
// e.g. for logits (B,3,D,H,W). The trainer sums it over its last steps to report the training
// patches' hard Dice and to flag a region the model has stopped predicting.
at::Tensor hard_overlap_counts(const at::Tensor& logits, const at::Tensor& target,
                               const at::Tensor& weight = {});

// Everything a network's output needs: the Dice + BCE of the logits, the cascade's deep
// supervision (out.deep coarsest first + out.logits, weighted by options.deep_supervision's
// last entries, targets and weight average-pooled to each output's size) and, when out.recon is
// defined, the VAE terms against `input`.
LossTerms segmentation_loss(const SegOutput& out, const at::Tensor& target, const at::Tensor& input,
                            const at::Tensor& weight = {}, const LossOptions& options = {});

}  // namespace kdseg
