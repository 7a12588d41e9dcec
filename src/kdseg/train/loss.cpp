#include "kdseg/train/loss.h"

#include <torch/torch.h>

#include "kdseg/models/blocks.h"
#include "kdseg/models/net.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

void check_same_shape(const at::Tensor& logits, const at::Tensor& target, const char* what) {
  if (!logits.defined() || !target.defined() || logits.sizes() != target.sizes())
    throw Error(what, "prediction " +
                          (logits.defined() ? shape_string(logits.sizes().vec()) : "undefined") +
                          " and target " +
                          (target.defined() ? shape_string(target.sizes().vec()) : "undefined") +
                          " must have the same (B,C,D,H,W) shape");
}

at::Tensor expanded_weight(const at::Tensor& weight, const at::Tensor& like) {
  return weight.defined() ? weight.to(like.dtype()).expand_as(like) : at::Tensor();
}

}  // namespace

at::Tensor soft_dice_loss(const at::Tensor& logits, const at::Tensor& target,
                          const at::Tensor& weight, bool batch_dice, double eps) {
  check_same_shape(logits, target, "soft_dice_loss");
  const at::Tensor p = torch::sigmoid(logits);
  const at::Tensor g = target.to(p.dtype());
  const at::Tensor w = expanded_weight(weight, p);
  const std::vector<int64_t> dims =
      batch_dice ? std::vector<int64_t>{0, 2, 3, 4} : std::vector<int64_t>{2, 3, 4};
  at::Tensor pg = p * g, p2 = p * p, g2 = g * g;
  if (w.defined()) pg = pg * w, p2 = p2 * w, g2 = g2 * w;
  const at::Tensor dice = (2 * pg.sum(dims) + eps) / (p2.sum(dims) + g2.sum(dims) + eps);
  return (1 - dice).mean();  // over (B,C), or C with batch_dice
}

at::Tensor bce_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight) {
  check_same_shape(logits, target, "bce_loss");
  const at::Tensor g = target.to(logits.dtype());
  at::Tensor bce = torch::binary_cross_entropy_with_logits(logits, g, {}, {}, at::Reduction::None);
  const std::vector<int64_t> dims{0, 2, 3, 4};
  if (!weight.defined()) return bce.mean(dims).sum();  // voxel mean per region, summed
  const at::Tensor w = expanded_weight(weight, bce);
  // A region whose weights are all zero adds zero (clamped denominator).
  return ((bce * w).sum(dims) / w.sum(dims).clamp_min(1e-8)).sum();
}

LossTerms dice_bce_loss(const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& weight, const LossOptions& options) {
  LossTerms t;
  t.dice = soft_dice_loss(logits, target, weight, options.batch_dice, options.dice_eps);
  t.bce = bce_loss(logits, target, weight);
  t.total = options.dice_weight * t.dice + options.bce_weight * t.bce;
  return t;
}

at::Tensor vae_l2_loss(const at::Tensor& recon, const at::Tensor& input) {
  check_same_shape(recon, input, "vae_l2_loss");
  return (recon - input).pow(2).mean();
}

at::Tensor vae_kl_loss(const at::Tensor& mu, const at::Tensor& logvar, int64_t n_input_elements) {
  const at::Tensor per_sample = (mu.pow(2) + logvar.exp() - logvar - 1).sum(1);  // (B)
  return per_sample.mean() / static_cast<double>(n_input_elements);
}

at::Tensor downsample_to(const at::Tensor& target, const std::vector<int64_t>& size) {
  std::vector<int64_t> factor(3);
  for (int i = 0; i < 3; ++i) {
    const int64_t from = target.size(2 + i);
    if (size[i] <= 0 || from % size[i] != 0)
      throw Error("deep supervision",
                  "cannot average-pool a target of " +
                      shape_string({target.size(2), target.size(3), target.size(4)}) + " to " +
                      shape_string(size) + " (not an integer factor)");
    factor[i] = from / size[i];
  }
  if (factor[0] == 1 && factor[1] == 1 && factor[2] == 1) return target;
  return torch::avg_pool3d(target.to(torch::kFloat), factor);
}

at::Tensor hard_overlap_counts(const at::Tensor& logits, const at::Tensor& target,
                               const at::Tensor& weight) {
  if (logits.sizes() != target.sizes() || logits.dim() < 3)
    throw Error("hard_overlap_counts", "logits " + shape_string(logits.sizes().vec()) +
                                           " and target " + shape_string(target.sizes().vec()) +
                                           " must be the same (B,C,...) shape");
  torch::NoGradGuard no_grad;
  at::Tensor p = logits.detach() > 0, t = target > 0.5;
  if (weight.defined()) {
    const at::Tensor m = (weight > 0).expand_as(p);
    p = p & m;
    t = t & m;
  }
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < logits.dim(); ++d) dims.push_back(d);
  return at::stack({(p & t).sum(dims), p.sum(dims), t.sum(dims)}, 1).to(at::kDouble);
}

LossTerms segmentation_loss(const SegOutput& out, const at::Tensor& target, const at::Tensor& input,
                            const at::Tensor& weight, const LossOptions& options) {
  std::vector<at::Tensor> outputs = out.deep;  // coarsest first
  outputs.push_back(out.logits);
  std::vector<double> w_out{1.0};
  if (outputs.size() > 1) {
    const auto& ds = options.deep_supervision;
    if (ds.size() < outputs.size())
      throw Error("deep supervision",
                  std::to_string(outputs.size()) + " outputs but only " +
                      std::to_string(ds.size()) + " weights",
                  "give one weight per output, coarse to fine, e.g. 0.2,0.3,0.4");
    w_out.assign(ds.end() - static_cast<std::ptrdiff_t>(outputs.size()), ds.end());
  }
  LossTerms t;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const at::Tensor& o = outputs[i];
    const std::vector<int64_t> size{o.size(2), o.size(3), o.size(4)};
    const at::Tensor g = downsample_to(target, size);
    const at::Tensor w = weight.defined() ? downsample_to(weight, size) : at::Tensor();
    LossTerms part = dice_bce_loss(o, g, w, options);
    t.dice = t.dice.defined() ? t.dice + w_out[i] * part.dice : w_out[i] * part.dice;
    t.bce = t.bce.defined() ? t.bce + w_out[i] * part.bce : w_out[i] * part.bce;
  }
  t.total = options.dice_weight * t.dice + options.bce_weight * t.bce;
  if (out.recon.defined()) {
    t.vae_l2 = vae_l2_loss(out.recon, input);
    t.vae_kl = vae_kl_loss(out.mu, out.logvar, input[0].numel());
    t.total = t.total + options.vae_l2_weight * t.vae_l2 + options.vae_kl_weight * t.vae_kl;
  }
  return t;
}

}  // namespace kdseg
