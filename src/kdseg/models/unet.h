#pragma once
// `unet`: the "No New Net" 3D UNet (Isensee et al., BraTS 2018; docs/design.md §3 item 1):
//   encoder level l: two conv3³ → InstanceNorm (affine) → LeakyReLU(0.01); the first conv of
//     every level but the top has stride 2 (strided convolutions instead of max pooling);
//   decoder level l (coarse → fine): 1×1 conv w(l+1)→w(l) (filter reduction), trilinear ×2,
//     concat [skip, up], two conv3³ → IN → LeakyReLU;
//   head 1×1 conv w0→3 → logits.
// Only the head has a bias: every other conv is followed by InstanceNorm (affine), which cancels
// a bias exactly (nnU-Net keeps these dead biases; kdseg counts parameters in use).
// Paper size: widths [30,60,120,240,480] (NiftyNet's No-New-Net port), stride 16, patch 128³:
// 18,775,653 parameters.
#include <cstdint>
#include <vector>

#include "kdseg/models/blocks.h"
#include "kdseg/models/net.h"

namespace kdseg {

struct UNetOptions {
  int64_t in_channels = 4;                             // T1, T1ce, T2, FLAIR
  int64_t out_channels = 3;                            // WT, TC, ET
  std::vector<int64_t> widths{30, 60, 120, 240, 480};  // per level, e.g. 4,8,16,32 for CPU tests
};
void to_json(nlohmann::json& j, const UNetOptions& o);
void from_json(const nlohmann::json& j, UNetOptions& o);

class UNetImpl : public SegNetImpl {
 public:
  explicit UNetImpl(const UNetOptions& options = {});
  SegOutput forward(const at::Tensor& x) override;  // (B,4,D,H,W) → logits (B,3,D,H,W)
  std::string arch() const override { return "unet"; }
  int64_t stride() const override;
  nlohmann::json options_json() const override { return options; }

  // Features per level, finest first; the last is the bottleneck (B,w[L-1],D/2^(L-1),…).
  std::vector<at::Tensor> encode(const at::Tensor& x);
  at::Tensor decode(const std::vector<at::Tensor>& features);  // → logits (B,3,D,H,W)

  UNetOptions options;

 private:
  std::vector<torch::nn::Sequential> encoder_, decoder_;
  std::vector<UpConv> up_;
  torch::nn::Conv3d head_{nullptr};
};
TORCH_MODULE(UNet);

}  // namespace kdseg
