#include "kdseg/models/blocks.h"

#include <torch/torch.h>

#include "kdseg/util/error.h"

namespace kdseg {

at::Tensor activate(const at::Tensor& x, Act act) {
  return act == Act::relu ? torch::relu(x) : torch::leaky_relu(x, 0.01);
}

torch::nn::Conv3d conv3d(int64_t in, int64_t out, int64_t kernel, int64_t stride, bool bias,
                         int64_t groups) {
  const int64_t padding = kernel % 2 == 1 ? kernel / 2 : 0;
  return torch::nn::Conv3d(torch::nn::Conv3dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(padding)
                               .bias(bias)
                               .groups(groups));
}

at::Tensor upsample2x(const at::Tensor& x) {
  namespace F = torch::nn::functional;
  const std::vector<int64_t> size{2 * x.size(2), 2 * x.size(3), 2 * x.size(4)};
  return F::interpolate(
      x, F::InterpolateFuncOptions().size(size).mode(torch::kTrilinear).align_corners(false));
}

// ---------------------------------------------------------------- Norm
NormImpl::NormImpl(const NormOptions& opt) : options(opt) {
  if (options.groups < 0 || (options.groups > 0 && options.channels % options.groups != 0))
    throw Error("Norm",
                std::to_string(options.channels) + " channels cannot be split into " +
                    std::to_string(options.groups) + " groups",
                "choose widths that are multiples of the GroupNorm group count");
  weight = register_parameter("weight", torch::ones({options.channels}));
  bias = register_parameter("bias", torch::zeros({options.channels}));
}

at::Tensor NormImpl::forward(const at::Tensor& x) {
  const int64_t groups = options.groups == 0 ? options.channels : options.groups;
  return torch::group_norm(x, groups, weight, bias, options.eps);
}

// ---------------------------------------------------------------- ConvNormAct
ConvNormActImpl::ConvNormActImpl(const ConvNormActOptions& opt) : options(opt) {
  conv = register_module(
      "conv", conv3d(options.in, options.out, options.kernel, options.stride, options.bias));
  norm = register_module("norm", Norm(NormOptions{options.out, options.norm_groups}));
}

at::Tensor ConvNormActImpl::forward(const at::Tensor& x) {
  return activate(norm(conv(x)), options.act);
}

// ---------------------------------------------------------------- ResBlock
ResBlockImpl::ResBlockImpl(const ResBlockOptions& opt) : options(opt) {
  const int64_t c = options.channels;
  const bool bias2 = options.pre_activation && options.bias;
  conv1 = register_module("conv1", conv3d(c, c, 3, 1, false, options.conv_groups));
  norm1 = register_module("norm1", Norm(NormOptions{c, options.norm_groups}));
  conv2 = register_module("conv2", conv3d(c, c, 3, 1, bias2, options.conv_groups));
  norm2 = register_module("norm2", Norm(NormOptions{c, options.norm_groups}));
}

at::Tensor ResBlockImpl::forward(const at::Tensor& x) {
  const Act act = options.act;
  if (options.pre_activation) {
    at::Tensor y = conv1(activate(norm1(x), act));
    y = conv2(activate(norm2(y), act));
    return x + y;
  }
  at::Tensor y = activate(norm1(conv1(x)), act);
  y = activate(norm2(conv2(y)), act);
  return x + y;
}

torch::nn::Sequential res_stage(int64_t n_blocks, const ResBlockOptions& options) {
  torch::nn::Sequential stage;
  for (int64_t i = 0; i < n_blocks; ++i) stage->push_back(ResBlock(options));
  return stage;
}

// ---------------------------------------------------------------- UpConv
UpConvImpl::UpConvImpl(int64_t in, int64_t out, bool bias) {
  conv = register_module("conv", conv3d(in, out, 1, 1, bias));
}

at::Tensor UpConvImpl::forward(const at::Tensor& x) {
  return upsample2x(conv(x));
}

// ---------------------------------------------------------------- checks
std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

void check_input(const at::Tensor& x, int64_t in_channels, int64_t stride,
                 const std::string& arch) {
  if (!x.defined() || x.dim() != 5)
    throw Error(arch,
                "expected a 5-D input (B,C,D,H,W), got " +
                    (x.defined() ? std::to_string(x.dim()) + "-D " + shape_string(x.sizes().vec())
                                 : std::string("an undefined tensor")));
  if (x.size(1) != in_channels)
    throw Error(arch,
                "expected " + std::to_string(in_channels) + " input channels, got " +
                    std::to_string(x.size(1)),
                "the channel order is T1, T1ce, T2, FLAIR");
  const std::vector<int64_t> spatial{x.size(2), x.size(3), x.size(4)};
  bool ok = true;
  for (int64_t s : spatial) ok = ok && s > 0 && s % stride == 0;
  if (!ok) {
    std::vector<int64_t> up;
    for (int64_t s : spatial)
      up.push_back(std::max<int64_t>(stride, (s + stride - 1) / stride * stride));
    throw Error(arch,
                "input size " + shape_string(spatial) +
                    " (D,H,W) is not a multiple of the network's total stride " +
                    std::to_string(stride),
                "pad or crop each side to a multiple of " + std::to_string(stride) + ", e.g. " +
                    shape_string(up));
  }
}

void check_divisible(int64_t channels, int64_t groups, const std::string& arch, const char* what) {
  if (groups <= 0 || channels % groups != 0)
    throw Error(arch,
                std::string(what) + ": " + std::to_string(channels) +
                    " channels are not divisible by " + std::to_string(groups),
                "choose widths that are multiples of " + std::to_string(groups));
}

}  // namespace kdseg
