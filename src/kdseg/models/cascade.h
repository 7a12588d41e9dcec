#pragma once
// `cascade`: the cascaded multi-encoder UNet (Lachinov, Vasiliev, Turlapov, BraTS 2018; the
// authors' MXNet code github.com/lachinov/brats2018-graphlabunn, segmentation_model.py;
// docs/design.md §3 item 3).
//
// One net of the cascade (CascadeNet), with f features and encoder multiplier m, depth L:
//   one encoder per modality, run as grouped convolutions (groups = in_channels): conv3³ →
//   E(0) = 2·f·m channels in all; per level l: pre-activation residual block (InstanceNorm →
//   ReLU → conv3³, twice, + identity), then [l < L-1] conv3³ stride 2 → E(l+1) = 2·E(l),
//   dropout 0.1;
//   the encoders' outputs at each level are merged by element-wise MAXIMUM over modalities
//   (E(l)/in_channels channels);
//   decoder level l (coarse → fine): transposed conv 2³ stride 2 → D(l) = 2·f·2^l channels,
//   concat [up, merged skip, coarser nets' probabilities at this resolution], 1×1 conv → D(l),
//   one pre-activation residual block; head 1×1 conv → 3 logits.
// The cascade (CascadeImpl): n_scales nets; net k sees the input average-pooled by 2^k and has
// f·2^k features (authors: f = 4 → 4, 8, 16 at 1, 1/2, 1/4). Coarsest first; each net's
// sigmoid probabilities are fed into every finer net's decoder at the matching resolution.
// Deep supervision: SegOutput::deep holds the coarser nets' logits (coarsest first); the loss
// weights them 0.2 / 0.3 / 0.4 coarse → fine (train/loss.h).
// Differences from the authors: 3 sigmoid regions instead of a 4-class softmax (kdseg's
// convention), so the fed-forward maps are region probabilities; trilinear is not used
// anywhere here (the authors upsample with transposed convs, downsample the input by average
// pooling). Biases: convs whose output is added to an identity path or feeds the head have one;
// transposed convs have none (MXNet's defaults); convs followed by a norm have none (a norm
// cancels a bias). InstanceNorm is affine. Paper size (f 4, m 2, 3 scales, depth 4, stride 32):
// 9,554,913 parameters, most of them in the widest, coarsest net.
#include <cstdint>
#include <vector>

#include "kdseg/models/blocks.h"
#include "kdseg/models/net.h"

namespace kdseg {

struct CascadeOptions {
  int64_t in_channels = 4;         // modalities, one encoder each
  int64_t out_channels = 3;        // WT, TC, ET
  int64_t base_features = 4;       // f of the full-scale net (net k has f·2^k), e.g. 1 in tests
  int64_t encoder_multiplier = 2;  // m: encoder widths 2·f·m·2^l in all (per modality /in_channels)
  int64_t n_scales = 3;            // nets at 1, 1/2, 1/4 of the input, e.g. 2
  int64_t depth = 4;               // resolution levels per net (>= n_scales), e.g. 3
  double dropout = 0.1;            // after each strided encoder conv; 0 = off
};
void to_json(nlohmann::json& j, const CascadeOptions& o);
void from_json(const nlohmann::json& j, CascadeOptions& o);

// One UNet of the cascade.
struct CascadeNetOptions {
  int64_t in_channels = 4;             // modalities
  int64_t out_channels = 3;            // regions
  int64_t features = 4;                // f, e.g. 16 for the 1/4-scale net
  int64_t encoder_multiplier = 2;      // m
  int64_t depth = 4;                   // resolution levels
  double dropout = 0.1;                // after each strided encoder conv
  std::vector<int64_t> side_levels{};  // decoder levels that receive a coarser net's output,
                                       // e.g. {1, 2}: out_channels more channels each
};

class CascadeNetImpl : public torch::nn::Module {
 public:
  explicit CascadeNetImpl(const CascadeNetOptions& options);
  // x (B,4,D,H,W); side[i] (B,3,D/2^l,H/2^l,W/2^l) for l = side_levels[i] → logits (B,3,D,H,W)
  at::Tensor forward(const at::Tensor& x, const std::vector<at::Tensor>& side);

  // Merged (max over modalities) encoder features per level, finest first:
  // (B,E(l)/in_channels,D/2^l,…).
  std::vector<at::Tensor> encode(const at::Tensor& x);
  at::Tensor decode(const std::vector<at::Tensor>& features, const std::vector<at::Tensor>& side);

  CascadeNetOptions options;

 private:
  torch::nn::Conv3d conv_in_{nullptr}, head_{nullptr};
  std::vector<ResBlock> encoder_, decoder_;
  std::vector<torch::nn::Conv3d> down_, fuse_;
  std::vector<torch::nn::ConvTranspose3d> up_;
};
TORCH_MODULE(CascadeNet);

class CascadeImpl : public SegNetImpl {
 public:
  explicit CascadeImpl(const CascadeOptions& options = {});
  // (B,4,D,H,W) → logits (B,3,D,H,W) of the full-scale net; deep = coarser nets' logits,
  // coarsest first: (B,3,D/2^(n-1),…), …, (B,3,D/2,…).
  SegOutput forward(const at::Tensor& x) override;
  std::string arch() const override { return "cascade"; }
  int64_t stride() const override;  // 2^(depth-1) · 2^(n_scales-1), 32 for the paper's
  nlohmann::json options_json() const override { return options; }

  CascadeOptions options;

 private:
  std::vector<CascadeNet> nets_;  // nets_[k] runs at 1/2^k
};
TORCH_MODULE(Cascade);

}  // namespace kdseg
