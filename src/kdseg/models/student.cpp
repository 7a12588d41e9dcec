#include "kdseg/models/student.h"

#include <torch/torch.h>

#include "kdseg/models/json_options.h"
#include "kdseg/models/narrow_conv.h"
#include "kdseg/util/error.h"

namespace kdseg {

void to_json(nlohmann::json& j, const StudentOptions& o) {
  j = {{"in_channels", o.in_channels},
       {"out_channels", o.out_channels},
       {"widths", o.widths},
       {"encoder_blocks", o.encoder_blocks},
       {"decoder_blocks", o.decoder_blocks},
       {"norm_groups", o.norm_groups}};
}

void from_json(const nlohmann::json& j, StudentOptions& o) {
  JsonOptionsReader r(j, "student options");
  r.get("in_channels", o.in_channels);
  r.get("out_channels", o.out_channels);
  r.get("widths", o.widths);
  r.get("encoder_blocks", o.encoder_blocks);
  r.get("decoder_blocks", o.decoder_blocks);
  r.get("norm_groups", o.norm_groups);
  r.finish();
}

StudentImpl::StudentImpl(const StudentOptions& opt) : options(opt) {
  const auto& w = options.widths;
  const size_t n_levels = w.size();
  if (n_levels < 2 || options.encoder_blocks.size() != n_levels ||
      options.decoder_blocks.size() != n_levels - 1)
    throw Error("student",
                "need at least 2 levels, one encoder_blocks entry per width and one "
                "decoder_blocks entry per level but the deepest",
                "e.g. widths [16,32,64,128], encoder_blocks [1,2,2,4], decoder_blocks [1,1,1]");
  for (int64_t c : w) check_divisible(c, options.norm_groups, "student", "GroupNorm");

  ResBlockOptions block;
  block.norm_groups = options.norm_groups;
  block.act = Act::leaky_relu;
  block.pre_activation = false;
  block.bias = false;

  conv_in_ = register_module("conv_in", conv3d(options.in_channels, w[0], 3, 1, false));
  norm_in_ = register_module("norm_in", Norm(NormOptions{w[0], options.norm_groups}));
  auto encoder = register_module("encoder", torch::nn::ModuleList());
  auto down = register_module("down", torch::nn::ModuleList());
  for (size_t l = 0; l < n_levels; ++l) {
    if (l > 0) {
      down_.push_back(conv3d(w[l - 1], w[l], 2, 2, false));
      down->push_back(down_.back());
    }
    block.channels = w[l];
    encoder_.push_back(res_stage(options.encoder_blocks[l], block));
    encoder->push_back(encoder_.back());
  }
  auto up = register_module("up", torch::nn::ModuleList());
  auto merge = register_module("merge", torch::nn::ModuleList());
  auto decoder = register_module("decoder", torch::nn::ModuleList());
  for (size_t l = 0; l + 1 < n_levels; ++l) {
    up_.push_back(UpConv(w[l + 1], w[l], false));
    up->push_back(up_.back());
    merge_.push_back(conv3d(2 * w[l], w[l], 1, 1, false));
    merge->push_back(merge_.back());
    block.channels = w[l];
    decoder_.push_back(res_stage(options.decoder_blocks[l], block));
    decoder->push_back(decoder_.back());
  }
  head_ = register_module("head", conv3d(w[0], options.out_channels, 3, 1, true));
}

int64_t StudentImpl::stride() const {
  return int64_t{1} << (options.widths.size() - 1);
}

std::vector<at::Tensor> StudentImpl::encode(const at::Tensor& x) {
  std::vector<at::Tensor> features;
  // (B,w0,D,H,W), no activation (as released); 4 channels in: narrow_conv3d's weight gradient
  at::Tensor h = norm_in_(narrow_conv3d(x, conv_in_->weight, conv_in_->bias));
  for (size_t l = 0; l < encoder_.size(); ++l) {
    if (l > 0) h = down_[l - 1](h);  // (B,w[l],D/2^l,H/2^l,W/2^l)
    h = encoder_[l]->forward(h);
    features.push_back(h);
  }
  return features;
}

at::Tensor StudentImpl::decode(const std::vector<at::Tensor>& features) {
  at::Tensor h = features.back();  // bottleneck (B,w[L-1],D/2^(L-1),…)
  for (size_t i = decoder_.size(); i-- > 0;) {
    h = activate_(up_[i](h), Act::leaky_relu);  // (B,w[i],D/2^i,…), in place
    // merge(cat(skip, h)) as the two halves of its 1×1 weight applied apart and summed: the same
    // function without the (B,2w[i],…) concatenation, which the merge would keep for its weight
    // gradient until the backward pass (340 MB at 144×144×128). merge has no bias.
    const at::Tensor& w = merge_[i]->weight;  // (w[i],2w[i],1,1,1)
    const int64_t c = features[i].size(1);
    h = at::conv3d(features[i], w.narrow(1, 0, c)).add_(at::conv3d(h, w.narrow(1, c, c)));
    h = decoder_[i]->forward(h);
  }
  return narrow_conv3d(h, head_->weight, head_->bias);  // (B,3,D,H,W), 3 channels out
}

SegOutput StudentImpl::forward(const at::Tensor& x) {
  check_input(x, options.in_channels, stride(), "student");
  SegOutput out;
  out.logits = decode(encode(x));
  return out;
}

}  // namespace kdseg
