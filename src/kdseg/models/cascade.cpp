#include "kdseg/models/cascade.h"

#include <torch/torch.h>

#include <algorithm>

#include "kdseg/models/json_options.h"
#include "kdseg/util/error.h"

namespace kdseg {

void to_json(nlohmann::json& j, const CascadeOptions& o) {
  j = {{"in_channels", o.in_channels},
       {"out_channels", o.out_channels},
       {"base_features", o.base_features},
       {"encoder_multiplier", o.encoder_multiplier},
       {"n_scales", o.n_scales},
       {"depth", o.depth},
       {"dropout", o.dropout}};
}

void from_json(const nlohmann::json& j, CascadeOptions& o) {
  JsonOptionsReader r(j, "cascade options");
  r.get("in_channels", o.in_channels);
  r.get("out_channels", o.out_channels);
  r.get("base_features", o.base_features);
  r.get("encoder_multiplier", o.encoder_multiplier);
  r.get("n_scales", o.n_scales);
  r.get("depth", o.depth);
  r.get("dropout", o.dropout);
  r.finish();
}

// ---------------------------------------------------------------- one net of the cascade
CascadeNetImpl::CascadeNetImpl(const CascadeNetOptions& opt) : options(opt) {
  const int64_t n_mod = options.in_channels, f = options.features, L = options.depth;
  if (L < 2 || f < 1 || options.encoder_multiplier < 1)
    throw Error("cascade", "need depth >= 2, features >= 1 and encoder_multiplier >= 1");
  auto enc_width = [&](int64_t l) { return 2 * f * options.encoder_multiplier << l; };  // E(l)
  auto dec_width = [&](int64_t l) { return 2 * f << l; };                               // D(l)
  check_divisible(enc_width(0), n_mod, "cascade", "per-modality encoders");
  for (int64_t l : options.side_levels)
    if (l < 0 || l > L - 2)
      throw Error("cascade",
                  "a coarser net's output cannot enter decoder level " + std::to_string(l) +
                      " of a net of depth " + std::to_string(L),
                  "use depth >= n_scales");

  ResBlockOptions enc_block;
  enc_block.norm_groups = 0;  // InstanceNorm
  enc_block.act = Act::relu;
  enc_block.pre_activation = true;
  enc_block.bias = true;
  enc_block.conv_groups = n_mod;
  ResBlockOptions dec_block = enc_block;
  dec_block.conv_groups = 1;

  conv_in_ = register_module("conv_in", conv3d(n_mod, enc_width(0), 3, 1, true, n_mod));
  auto encoder = register_module("encoder", torch::nn::ModuleList());
  auto down = register_module("down", torch::nn::ModuleList());
  for (int64_t l = 0; l < L; ++l) {
    enc_block.channels = enc_width(l);
    encoder_.push_back(ResBlock(enc_block));
    encoder->push_back(encoder_.back());
    if (l + 1 < L) {
      down_.push_back(conv3d(enc_width(l), enc_width(l + 1), 3, 2, true, n_mod));
      down->push_back(down_.back());
    }
  }
  auto up = register_module("up", torch::nn::ModuleList());
  auto fuse = register_module("fuse", torch::nn::ModuleList());
  auto decoder = register_module("decoder", torch::nn::ModuleList());
  for (int64_t l = 0; l + 1 < L; ++l) {
    const int64_t from = l + 2 == L ? enc_width(L - 1) / n_mod : dec_width(l + 1);
    up_.push_back(torch::nn::ConvTranspose3d(
        torch::nn::ConvTranspose3dOptions(from, dec_width(l), 2).stride(2).bias(false)));
    up->push_back(up_.back());
    const int64_t n_side = std::count(options.side_levels.begin(), options.side_levels.end(), l);
    const int64_t cat = dec_width(l) + enc_width(l) / n_mod + n_side * options.out_channels;
    fuse_.push_back(conv3d(cat, dec_width(l), 1, 1, true));
    fuse->push_back(fuse_.back());
    dec_block.channels = dec_width(l);
    decoder_.push_back(ResBlock(dec_block));
    decoder->push_back(decoder_.back());
  }
  head_ = register_module("head", conv3d(dec_width(0), options.out_channels, 1, 1, true));
}

std::vector<at::Tensor> CascadeNetImpl::encode(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  const int64_t n_mod = options.in_channels;
  std::vector<at::Tensor> merged;
  at::Tensor h = conv_in_(x);  // (B,E0,D,H,W): E0/n_mod channels per modality
  for (size_t l = 0; l < encoder_.size(); ++l) {
    h = encoder_[l](h);  // (B,E(l),D/2^l,…), grouped: modalities stay apart
    auto s = h.sizes().vec();
    // (B,n_mod,E(l)/n_mod,…) → max over modalities → (B,E(l)/n_mod,…)
    merged.push_back(std::get<0>(h.view({s[0], n_mod, s[1] / n_mod, s[2], s[3], s[4]}).max(1)));
    if (l < down_.size()) {
      h = down_[l](h);  // (B,E(l+1),D/2^(l+1),…)
      if (options.dropout > 0)
        h = F::dropout(h, F::DropoutFuncOptions().p(options.dropout).training(is_training()));
    }
  }
  return merged;
}

at::Tensor CascadeNetImpl::decode(const std::vector<at::Tensor>& features,
                                  const std::vector<at::Tensor>& side) {
  at::Tensor h = features.back();
  for (size_t i = decoder_.size(); i-- > 0;) {
    std::vector<at::Tensor> parts{up_[i](h), features[i]};  // (B,D(i),…), (B,M(i),…)
    for (size_t s = 0; s < side.size(); ++s)
      if (options.side_levels[s] == static_cast<int64_t>(i)) parts.push_back(side[s]);
    h = decoder_[i](fuse_[i](torch::cat(parts, 1)));  // (B,D(i),D/2^i,…)
  }
  return head_(h);  // (B,3,D,H,W)
}

at::Tensor CascadeNetImpl::forward(const at::Tensor& x, const std::vector<at::Tensor>& side) {
  if (side.size() != options.side_levels.size())
    throw Error("cascade", "expected " + std::to_string(options.side_levels.size()) +
                               " coarser outputs, got " + std::to_string(side.size()));
  return decode(encode(x), side);
}

// ---------------------------------------------------------------- the cascade
CascadeImpl::CascadeImpl(const CascadeOptions& opt) : options(opt) {
  if (options.n_scales < 1 || options.depth < std::max<int64_t>(2, options.n_scales))
    throw Error("cascade",
                "need n_scales >= 1 and depth >= max(2, n_scales), got n_scales " +
                    std::to_string(options.n_scales) + ", depth " + std::to_string(options.depth),
                "e.g. n_scales 3, depth 4 (the authors')");
  auto nets = register_module("nets", torch::nn::ModuleList());
  for (int64_t k = 0; k < options.n_scales; ++k) {
    CascadeNetOptions n;
    n.in_channels = options.in_channels;
    n.out_channels = options.out_channels;
    n.features = options.base_features << k;
    n.encoder_multiplier = options.encoder_multiplier;
    n.depth = options.depth;
    n.dropout = options.dropout;
    for (int64_t j = k + 1; j < options.n_scales; ++j) n.side_levels.push_back(j - k);
    nets_.push_back(CascadeNet(n));
    nets->push_back(nets_.back());
  }
}

int64_t CascadeImpl::stride() const {
  return (int64_t{1} << (options.depth - 1)) << (options.n_scales - 1);
}

SegOutput CascadeImpl::forward(const at::Tensor& x) {
  check_input(x, options.in_channels, stride(), "cascade");
  const size_t n = nets_.size();
  std::vector<at::Tensor> logits(n);
  for (size_t k = n; k-- > 0;) {  // coarsest first
    const int64_t factor = int64_t{1} << k;
    at::Tensor xk = k == 0 ? x : torch::avg_pool3d(x, {factor, factor, factor});  // (B,4,D/2^k,…)
    std::vector<at::Tensor> side;
    for (size_t j = k + 1; j < n; ++j) side.push_back(torch::sigmoid(logits[j]));  // (B,3,D/2^j,…)
    logits[k] = nets_[k]->forward(xk, side);  // (B,3,D/2^k,…)
  }
  SegOutput out;
  out.logits = logits[0];
  for (size_t k = n; k-- > 1;) out.deep.push_back(logits[k]);
  return out;
}

}  // namespace kdseg
