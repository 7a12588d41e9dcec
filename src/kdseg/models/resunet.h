#pragma once
// `resunet` and `resunet-vae`: Myronenko's asymmetric residual UNet (BraTS 2018 winner, "3D MRI
// brain tumor segmentation using autoencoder regularization"; docs/design.md §3 item 2):
//   input conv3³ 4→w0, spatial dropout (0.2);
//   encoder level l: [l>0: conv3³ stride 2 w(l-1)→w(l)] + encoder_blocks[l] pre-activation
//     residual blocks GN(8)→ReLU→conv3³→GN→ReLU→conv3³, + identity;
//   decoder level l (coarse → fine): 1×1 conv w(l+1)→w(l), trilinear ×2, ADD the skip,
//     decoder_blocks[l] residual blocks;
//   head GN → ReLU → 1×1 conv w0→3 (+bias) → logits (GN+ReLU first, as MONAI's SegResNet, since
//     the blocks are pre-activation).
// `resunet-vae` adds the VAE branch from the bottleneck: GN → ReLU → conv3³ stride 2 →
// vae_channels, flatten, dense → mu and dense → logvar (vae_latent each); z = mu +
// exp(logvar/2)·ε; dense → vae_channels at the bottleneck/2 grid, ReLU, then one decoder
// level per encoder level without skips (1×1 conv, trilinear ×2, one residual block), then
// GN → ReLU → 1×1 conv → 4 channels: the reconstructed input. The dense layers fix the input
// size (vae_input_shape). The branch runs only in training mode (is_training()): in eval mode
// the network is a plain resunet that takes any multiple of its stride.
// Convolutions have no bias except the heads and the VAE's strided conv; GroupNorm is affine.
// Paper size (widths [16,32,64,128], blocks [1,2,2,4] / [1,1,1]): resunet 4,702,227 parameters;
// resunet-vae at vae_input_shape 144×144×128 (the paper's patch), latent 128: 9,053,383.
#include <array>
#include <cstdint>
#include <vector>

#include <torch/nn/modules/linear.h>

#include "kdseg/models/blocks.h"
#include "kdseg/models/net.h"

namespace kdseg {

struct ResUNetOptions {
  int64_t in_channels = 4;                          // T1, T1ce, T2, FLAIR
  int64_t out_channels = 3;                         // WT, TC, ET
  std::vector<int64_t> widths{16, 32, 64, 128};     // doubling per level, e.g. 8,16,32,64
  std::vector<int64_t> encoder_blocks{1, 2, 2, 4};  // residual blocks per encoder level
  std::vector<int64_t> decoder_blocks{1, 1, 1};     // per decoder level, finest first
  int64_t norm_groups = 8;                          // GroupNorm groups, e.g. 4 for tiny widths
  double dropout = 0.2;                             // spatial dropout after the input conv; 0 = off
  bool vae = false;                                 // set by the name: "resunet-vae"
  std::array<int64_t, 3> vae_input_shape{144, 144,
                                         128};  // (D,H,W) the VAE is built for, e.g. 32,32,32
  int64_t vae_latent = 128;                     // latent size Z (Myronenko: 128)
  int64_t vae_channels = 16;                    // channels before the dense layer (Myronenko: 16)
};
void to_json(nlohmann::json& j, const ResUNetOptions& o);  // vae_* keys only when vae
void from_json(const nlohmann::json& j, ResUNetOptions& o);

class ResUNetImpl : public SegNetImpl {
 public:
  explicit ResUNetImpl(const ResUNetOptions& options = {});
  // (B,4,D,H,W) → logits (B,3,D,H,W); with the VAE in training mode also recon (B,4,D,H,W),
  // mu and logvar (B,Z).
  SegOutput forward(const at::Tensor& x) override;
  std::string arch() const override { return options.vae ? "resunet-vae" : "resunet"; }
  int64_t stride() const override;
  nlohmann::json options_json() const override { return options; }

  std::vector<at::Tensor> encode(const at::Tensor& x);         // per level, finest first
  at::Tensor decode(const std::vector<at::Tensor>& features);  // → logits (B,3,D,H,W)
  // VAE branch: bottleneck (B,w[L-1],D/s,H/s,W/s) → recon, mu, logvar into `out`.
  void vae_reconstruct(const at::Tensor& bottleneck, SegOutput& out);

  ResUNetOptions options;

 private:
  torch::nn::Conv3d conv_in_{nullptr}, head_{nullptr};
  Norm head_norm_{nullptr};
  std::vector<torch::nn::Sequential> encoder_, decoder_;
  std::vector<torch::nn::Conv3d> down_;
  std::vector<UpConv> up_;
  // VAE branch (empty unless options.vae)
  Norm vae_norm_{nullptr}, vae_head_norm_{nullptr};
  torch::nn::Conv3d vae_conv_{nullptr}, vae_head_{nullptr};
  torch::nn::Linear vae_mu_{nullptr}, vae_logvar_{nullptr}, vae_fc_{nullptr};
  std::vector<UpConv> vae_up_;
  std::vector<torch::nn::Sequential> vae_decoder_;
  std::array<int64_t, 3> vae_grid_{0, 0, 0};  // (D,H,W) of the dense layer's grid
};
TORCH_MODULE(ResUNet);

}  // namespace kdseg
