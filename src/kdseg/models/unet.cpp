#include "kdseg/models/unet.h"

#include <torch/torch.h>

#include "kdseg/models/json_options.h"
#include "kdseg/util/error.h"

namespace kdseg {

void to_json(nlohmann::json& j, const UNetOptions& o) {
  j = {{"in_channels", o.in_channels}, {"out_channels", o.out_channels}, {"widths", o.widths}};
}

void from_json(const nlohmann::json& j, UNetOptions& o) {
  JsonOptionsReader r(j, "unet options");
  r.get("in_channels", o.in_channels);
  r.get("out_channels", o.out_channels);
  r.get("widths", o.widths);
  r.finish();
}

UNetImpl::UNetImpl(const UNetOptions& opt) : options(opt) {
  const auto& w = options.widths;
  const size_t n_levels = w.size();
  if (n_levels < 2)
    throw Error("unet", "need at least 2 levels", "e.g. widths [30,60,120,240,480]");

  auto stage = [&](int64_t in, int64_t out, int64_t stride) {
    ConvNormActOptions c;
    c.norm_groups = 0;  // InstanceNorm
    c.act = Act::leaky_relu;
    c.bias = false;  // cancelled by the InstanceNorm that follows
    torch::nn::Sequential s;
    c.in = in, c.out = out, c.stride = stride;
    s->push_back(ConvNormAct(c));
    c.in = out, c.stride = 1;
    s->push_back(ConvNormAct(c));
    return s;
  };

  auto encoder = register_module("encoder", torch::nn::ModuleList());
  for (size_t l = 0; l < n_levels; ++l) {
    encoder_.push_back(l == 0 ? stage(options.in_channels, w[0], 1) : stage(w[l - 1], w[l], 2));
    encoder->push_back(encoder_.back());
  }
  auto up = register_module("up", torch::nn::ModuleList());
  auto decoder = register_module("decoder", torch::nn::ModuleList());
  for (size_t l = 0; l + 1 < n_levels; ++l) {
    up_.push_back(UpConv(w[l + 1], w[l], false));
    up->push_back(up_.back());
    decoder_.push_back(stage(2 * w[l], w[l], 1));
    decoder->push_back(decoder_.back());
  }
  head_ = register_module("head", conv3d(w[0], options.out_channels, 1, 1, true));
}

int64_t UNetImpl::stride() const {
  return int64_t{1} << (options.widths.size() - 1);
}

std::vector<at::Tensor> UNetImpl::encode(const at::Tensor& x) {
  std::vector<at::Tensor> features;
  at::Tensor h = x;
  for (auto& stage : encoder_) {
    h = stage->forward(h);  // (B,w[l],D/2^l,H/2^l,W/2^l)
    features.push_back(h);
  }
  return features;
}

at::Tensor UNetImpl::decode(const std::vector<at::Tensor>& features) {
  at::Tensor h = features.back();
  for (size_t i = decoder_.size(); i-- > 0;) {
    h = up_[i](h);                                              // (B,w[i],D/2^i,…)
    h = decoder_[i]->forward(torch::cat({features[i], h}, 1));  // (B,2w[i],…) → (B,w[i],…)
  }
  return head_(h);  // (B,3,D,H,W)
}

SegOutput UNetImpl::forward(const at::Tensor& x) {
  check_input(x, options.in_channels, stride(), "unet");
  SegOutput out;
  out.logits = decode(encode(x));
  return out;
}

}  // namespace kdseg
