#include "kdseg/models/resunet.h"

#include <torch/torch.h>

#include "kdseg/models/json_options.h"
#include "kdseg/models/narrow_conv.h"
#include "kdseg/util/error.h"

namespace kdseg {

void to_json(nlohmann::json& j, const ResUNetOptions& o) {
  j = {{"in_channels", o.in_channels},
       {"out_channels", o.out_channels},
       {"widths", o.widths},
       {"encoder_blocks", o.encoder_blocks},
       {"decoder_blocks", o.decoder_blocks},
       {"norm_groups", o.norm_groups},
       {"dropout", o.dropout}};
  if (o.vae) {
    j["vae_input_shape"] = o.vae_input_shape;
    j["vae_latent"] = o.vae_latent;
    j["vae_channels"] = o.vae_channels;
  }
}

void from_json(const nlohmann::json& j, ResUNetOptions& o) {
  JsonOptionsReader r(j, "resunet options");
  r.get("in_channels", o.in_channels);
  r.get("out_channels", o.out_channels);
  r.get("widths", o.widths);
  r.get("encoder_blocks", o.encoder_blocks);
  r.get("decoder_blocks", o.decoder_blocks);
  r.get("norm_groups", o.norm_groups);
  r.get("dropout", o.dropout);
  r.get("vae_input_shape", o.vae_input_shape);
  r.get("vae_latent", o.vae_latent);
  r.get("vae_channels", o.vae_channels);
  r.finish();
}

ResUNetImpl::ResUNetImpl(const ResUNetOptions& opt) : options(opt) {
  const std::string name = arch();
  const auto& w = options.widths;
  const size_t n_levels = w.size();
  if (n_levels < 2 || options.encoder_blocks.size() != n_levels ||
      options.decoder_blocks.size() != n_levels - 1)
    throw Error(name,
                "need at least 2 levels, one encoder_blocks entry per width and one "
                "decoder_blocks entry per level but the deepest",
                "e.g. widths [16,32,64,128], encoder_blocks [1,2,2,4], decoder_blocks [1,1,1]");
  for (int64_t c : w) check_divisible(c, options.norm_groups, name, "GroupNorm");

  ResBlockOptions block;
  block.norm_groups = options.norm_groups;
  block.act = Act::relu;
  block.pre_activation = true;
  block.bias = false;

  conv_in_ = register_module("conv_in", conv3d(options.in_channels, w[0], 3, 1, false));
  auto encoder = register_module("encoder", torch::nn::ModuleList());
  auto down = register_module("down", torch::nn::ModuleList());
  for (size_t l = 0; l < n_levels; ++l) {
    if (l > 0) {
      down_.push_back(conv3d(w[l - 1], w[l], 3, 2, false));
      down->push_back(down_.back());
    }
    block.channels = w[l];
    encoder_.push_back(res_stage(options.encoder_blocks[l], block));
    encoder->push_back(encoder_.back());
  }
  auto up = register_module("up", torch::nn::ModuleList());
  auto decoder = register_module("decoder", torch::nn::ModuleList());
  for (size_t l = 0; l + 1 < n_levels; ++l) {
    up_.push_back(UpConv(w[l + 1], w[l], false));
    up->push_back(up_.back());
    block.channels = w[l];
    decoder_.push_back(res_stage(options.decoder_blocks[l], block));
    decoder->push_back(decoder_.back());
  }
  head_norm_ = register_module("head_norm", Norm(NormOptions{w[0], options.norm_groups}));
  head_ = register_module("head", conv3d(w[0], options.out_channels, 1, 1, true));

  if (!options.vae) return;
  const int64_t s2 = 2 * stride();
  for (int i = 0; i < 3; ++i)
    if (options.vae_input_shape[i] <= 0 || options.vae_input_shape[i] % s2 != 0)
      throw Error(
          name,
          "vae_input_shape " +
              shape_string({options.vae_input_shape.begin(), options.vae_input_shape.end()}) +
              " is not a multiple of " + std::to_string(s2) +
              " (twice the network stride: the VAE downsamples the bottleneck once more)",
          "e.g. vae_input_shape [144,144,128] or [32,32,32]");
  int64_t n_grid = 1;
  for (int i = 0; i < 3; ++i) {
    vae_grid_[i] = options.vae_input_shape[i] / s2;
    n_grid *= vae_grid_[i];
  }
  const int64_t vc = options.vae_channels, bottom = w.back();
  const int64_t n_flat = vc * n_grid;
  vae_norm_ = register_module("vae_norm", Norm(NormOptions{bottom, options.norm_groups}));
  vae_conv_ = register_module("vae_conv", conv3d(bottom, vc, 3, 2, true));
  vae_mu_ = register_module("vae_mu", torch::nn::Linear(n_flat, options.vae_latent));
  vae_logvar_ = register_module("vae_logvar", torch::nn::Linear(n_flat, options.vae_latent));
  vae_fc_ = register_module("vae_fc", torch::nn::Linear(options.vae_latent, n_flat));
  auto vae_up = register_module("vae_up", torch::nn::ModuleList());
  auto vae_decoder = register_module("vae_decoder", torch::nn::ModuleList());
  vae_up_.push_back(UpConv(vc, bottom, false));  // (B,vc,D/2s,…) → (B,w[L-1],D/s,…)
  vae_up->push_back(vae_up_.back());
  for (size_t i = n_levels - 1; i-- > 0;) {
    vae_up_.push_back(UpConv(w[i + 1], w[i], false));
    vae_up->push_back(vae_up_.back());
    block.channels = w[i];
    vae_decoder_.push_back(res_stage(1, block));
    vae_decoder->push_back(vae_decoder_.back());
  }
  vae_head_norm_ = register_module("vae_head_norm", Norm(NormOptions{w[0], options.norm_groups}));
  vae_head_ = register_module("vae_head", conv3d(w[0], options.in_channels, 1, 1, true));
}

int64_t ResUNetImpl::stride() const {
  return int64_t{1} << (options.widths.size() - 1);
}

std::vector<at::Tensor> ResUNetImpl::encode(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  std::vector<at::Tensor> features;
  at::Tensor h = narrow_conv3d(x, conv_in_->weight, conv_in_->bias);  // (B,w0,D,H,W)
  if (options.dropout > 0)
    h = F::dropout3d(h, F::Dropout3dFuncOptions().p(options.dropout).training(is_training()));
  for (size_t l = 0; l < encoder_.size(); ++l) {
    if (l > 0) h = down_[l - 1](h);  // (B,w[l],D/2^l,H/2^l,W/2^l)
    h = encoder_[l]->forward(h);
    features.push_back(h);
  }
  return features;
}

at::Tensor ResUNetImpl::decode(const std::vector<at::Tensor>& features) {
  at::Tensor h = features.back();
  for (size_t i = decoder_.size(); i-- > 0;) {
    h = up_[i](h) + features[i];  // (B,w[i],D/2^i,…)
    h = decoder_[i]->forward(h);
  }
  return head_(activate_(head_norm_(h), Act::relu));  // (B,3,D,H,W)
}

void ResUNetImpl::vae_reconstruct(const at::Tensor& bottleneck, SegOutput& out) {
  const int64_t batch = bottleneck.size(0);
  at::Tensor h = vae_conv_(activate_(vae_norm_(bottleneck), Act::relu));  // (B,vc,D/2s,H/2s,W/2s)
  h = h.flatten(1);                                                       // (B,vc·n_grid)
  out.mu = vae_mu_(h);                                                    // (B,Z)
  out.logvar = vae_logvar_(h);                                            // (B,Z)
  at::Tensor z = out.mu + torch::exp(0.5 * out.logvar) * torch::randn_like(out.mu);
  h = torch::relu(vae_fc_(z))
          .view({batch, options.vae_channels, vae_grid_[0], vae_grid_[1], vae_grid_[2]});
  h = vae_up_[0](h);  // (B,w[L-1],D/s,…)
  for (size_t k = 0; k < vae_decoder_.size(); ++k)
    h = vae_decoder_[k]->forward(vae_up_[k + 1](h));  // up one level, one residual block
  out.recon = vae_head_(activate_(vae_head_norm_(h), Act::relu));  // (B,4,D,H,W)
}

SegOutput ResUNetImpl::forward(const at::Tensor& x) {
  const std::string name = arch();
  check_input(x, options.in_channels, stride(), name);
  const bool run_vae = options.vae && is_training();
  if (run_vae) {
    const auto& s = options.vae_input_shape;
    if (x.size(2) != s[0] || x.size(3) != s[1] || x.size(4) != s[2])
      throw Error(
          name,
          "in training mode the VAE branch needs inputs of exactly " +
              shape_string({s[0], s[1], s[2]}) + " (vae_input_shape), got " +
              shape_string({x.size(2), x.size(3), x.size(4)}),
          "train with patch = vae_input_shape, or call eval() for inference at other sizes");
  }
  std::vector<at::Tensor> features = encode(x);
  SegOutput out;
  out.logits = decode(features);
  if (run_vae) vae_reconstruct(features.back(), out);
  return out;
}

}  // namespace kdseg
