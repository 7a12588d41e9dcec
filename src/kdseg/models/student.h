#pragma once
// `student`: the residual UNet the authors released as their distilled model
// (github.com/lachinov/brats2019, model.py, class UNet with block=Residual;
// docs/design.md §3 item 4):
//   input conv3³ 4→w0 (no bias) + GroupNorm, no activation;
//   encoder level l: [l>0: conv2³ stride 2 w(l-1)→w(l), no bias] + encoder_blocks[l] residual
//     blocks conv3³→GN→LeakyReLU(0.01) twice, then add (post-activation);
//   decoder level l (coarse → fine): trilinear ×2 and 1×1 conv w(l+1)→w(l) (computed conv first,
//     the same function), LeakyReLU, concat [skip, up], 1×1 conv 2w(l)→w(l), decoder_blocks[l]
//     residual blocks;
//   head conv3³ w0→3 with bias → logits (sigmoid outside).
// Parameter convention: every conv is bias-free except the head; GroupNorm is affine (weight and
// bias per channel). The released code also builds a decoder stage at the deepest level that its
// forward never runs; kdseg builds only what is used. At widths [16,32,64,128], blocks
// [1,2,2,4] / [1,1,1]: 4,509,939 parameters ("about 4.51 M").
#include <cstdint>
#include <vector>

#include "kdseg/models/blocks.h"
#include "kdseg/models/net.h"

namespace kdseg {

struct StudentOptions {
  int64_t in_channels = 4;                          // T1, T1ce, T2, FLAIR
  int64_t out_channels = 3;                         // WT, TC, ET
  std::vector<int64_t> widths{16, 32, 64, 128};     // per level, e.g. 8,8,16,16 for CPU tests
  std::vector<int64_t> encoder_blocks{1, 2, 2, 4};  // residual blocks per encoder level
  std::vector<int64_t> decoder_blocks{1, 1, 1};     // per decoder level, finest first
  int64_t norm_groups = 8;                          // GroupNorm groups; widths must divide, e.g. 4
};
void to_json(nlohmann::json& j, const StudentOptions& o);
void from_json(const nlohmann::json& j, StudentOptions& o);

class StudentImpl : public SegNetImpl {
 public:
  explicit StudentImpl(const StudentOptions& options = {});
  SegOutput forward(const at::Tensor& x) override;  // (B,4,D,H,W) → logits (B,3,D,H,W)
  std::string arch() const override { return "student"; }
  int64_t stride() const override;
  nlohmann::json options_json() const override { return options; }

  // Encoder: returns the skip tensors, finest first; the last is the bottleneck
  // (B,w0,D,H,W), (B,w1,D/2,H/2,W/2), …, (B,w[L-1],D/2^(L-1),…).
  std::vector<at::Tensor> encode(const at::Tensor& x);
  // Decoder + head: features from encode() → logits (B,3,D,H,W).
  at::Tensor decode(const std::vector<at::Tensor>& features);

  StudentOptions options;

 private:
  torch::nn::Conv3d conv_in_{nullptr}, head_{nullptr};
  Norm norm_in_{nullptr};
  std::vector<torch::nn::Sequential> encoder_, decoder_;
  std::vector<torch::nn::Conv3d> down_, merge_;
  std::vector<UpConv> up_;
};
TORCH_MODULE(Student);

}  // namespace kdseg
