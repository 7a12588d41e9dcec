#include "kdseg/models/blocks.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kdseg/models/narrow_conv.h"
#include "kdseg/util/bf16.h"
#include "kdseg/util/error.h"

namespace kdseg {

at::Tensor activate_(at::Tensor x, Act act) {
  return act == Act::relu ? torch::relu_(x) : torch::leaky_relu_(x, 0.01);
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

at::Tensor conv_forward(torch::nn::Conv3d conv, const at::Tensor& x) {
  const auto& o = conv->options;
  const std::array<int64_t, 3> ones{1, 1, 1}, threes{3, 3, 3};
  const auto* padding = c10::get_if<torch::ExpandingArray<3>>(&o.padding());
  const bool same3 = *o.kernel_size() == threes && *o.stride() == ones && o.groups() == 1 &&
                     padding && **padding == ones && *o.dilation() == ones &&
                     c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode());
  return same3 ? narrow_conv3d(x, conv->weight, conv->bias) : conv->forward(x);
}

namespace {

// (N,D,H,W) float32 → (N,2D,2H,2W), one pass: each output row mixes four input rows along D and H,
// then interpolates along W.
at::Tensor upsample2x_forward(const at::Tensor& input) {
  const at::Tensor x = input.contiguous();
  const int64_t d = x.size(2), h = x.size(3), w = x.size(4), n = x.size(0) * x.size(1);
  at::Tensor y = at::empty({x.size(0), x.size(1), 2 * d, 2 * h, 2 * w}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const UpsampleTaps td = upsample_taps(d), th = upsample_taps(h), tw = upsample_taps(w);
  at::parallel_for(0, n * 2 * d * 2 * h, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> r(w);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % (2 * h), od = (row / (2 * h)) % (2 * d), c = row / (4 * d * h);
      const float* p00 = xp + ((c * d + td.i0[od]) * h + th.i0[oh]) * w;
      const float* p01 = xp + ((c * d + td.i0[od]) * h + th.i1[oh]) * w;
      const float* p10 = xp + ((c * d + td.i1[od]) * h + th.i0[oh]) * w;
      const float* p11 = xp + ((c * d + td.i1[od]) * h + th.i1[oh]) * w;
      const float w00 = td.w0[od] * th.w0[oh], w01 = td.w0[od] * th.w1[oh],
                  w10 = td.w1[od] * th.w0[oh], w11 = td.w1[od] * th.w1[oh];
      for (int64_t i = 0; i < w; ++i)
        r[i] = w00 * p00[i] + w01 * p01[i] + w10 * p10[i] + w11 * p11[i];
      float* out = yp + row * 2 * w;
      // Along W the interior taps are 0.25 / 0.75 of neighbours, written out so that the loop
      // vectorises (0.015 s against 0.047 s reading the taps, 16x72x72x64); each end from the taps.
      for (int64_t i = 1; i + 1 < w; ++i) {
        out[2 * i] = 0.25f * r[i - 1] + 0.75f * r[i];
        out[2 * i + 1] = 0.75f * r[i] + 0.25f * r[i + 1];
      }
      for (const int64_t o : {int64_t{0}, int64_t{1}, 2 * w - 2, 2 * w - 1})
        out[o] = tw.w0[o] * r[tw.i0[o]] + tw.w1[o] * r[tw.i1[o]];
    }
  });
  return y;
}

// The adjoint of upsample_taps along one axis of n inputs: input j receives outputs 2j, 2j+1
// (0.75 each) and 2j−1, 2j+2 (0.25 each), indices clamped to [0, 2n) — at the ends the clamped
// taps land on the outputs that read input j with weight 1 (o = 0) or twice (o = 2n−1).
struct Tap4 {
  int64_t o[4];
  float w[4];
};

inline Tap4 down_tap(int64_t j, int64_t n) {
  const int64_t last = 2 * n - 1;
  return {{2 * j, 2 * j + 1, std::max<int64_t>(2 * j - 1, 0), std::min(2 * j + 2, last)},
          {0.75f, 0.75f, 0.25f, 0.25f}};
}

// dL/dx (N,D,H,W) of upsample2x_forward from dL/dy (N,2D,2H,2W), one pass: each input row sums
// sixteen output rows along D and H, then applies the W adjoint.
at::Tensor upsample2x_backward(const at::Tensor& grad, int64_t d, int64_t h, int64_t w) {
  const at::Tensor g = grad.contiguous();
  const int64_t n = g.size(0) * g.size(1), w2 = 2 * w;
  at::Tensor gx = at::empty({g.size(0), g.size(1), d, h, w}, g.options());
  const float* gp = g.data_ptr<float>();
  float* out = gx.data_ptr<float>();
  at::parallel_for(0, n * d * h, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> r(w2);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t ih = row % h, id = (row / h) % d, c = row / (d * h);
      const Tap4 td = down_tap(id, d), th = down_tap(ih, h);
      std::fill(r.begin(), r.end(), 0.f);
      for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
          const float wt = td.w[a] * th.w[b];
          const float* src = gp + ((c * 2 * d + td.o[a]) * 2 * h + th.o[b]) * w2;
          for (int64_t i = 0; i < w2; ++i) r[i] += wt * src[i];
        }
      float* dst = out + row * w;
      for (int64_t j = 0; j < w; ++j)
        dst[j] = 0.75f * (r[2 * j] + r[2 * j + 1]) + 0.25f * r[std::max<int64_t>(2 * j - 1, 0)] +
                 0.25f * r[std::min(2 * j + 2, w2 - 1)];
    }
  });
  return gx;
}

class Upsample2x : public torch::autograd::Function<Upsample2x> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->saved_data["size"] = x.sizes().vec();
    return upsample2x_forward(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto size = ctx->saved_data["size"].toIntVector();
    return {upsample2x_backward(grads[0], size[2], size[3], size[4])};
  }
};

// kdseg's kernel, float32 on a CPU (LibTorch 1.13's is slower in float32, and about 10x slower in
// bf16: 3.1 s against 0.3 s at 16x176x208x152).
at::Tensor upsample2x_cpu(const at::Tensor& x) {
  if (at::GradMode::is_enabled() && x.requires_grad()) return Upsample2x::apply(x);
  return upsample2x_forward(x);
}

}  // namespace

UpsampleTaps upsample_taps(int64_t n) {
  UpsampleTaps t;
  for (int64_t o = 0; o < 2 * n; ++o) {
    const float src = std::max(0.0f, (static_cast<float>(o) + 0.5f) * 0.5f - 0.5f);
    const int64_t i = static_cast<int64_t>(src);
    const float l1 = src - static_cast<float>(i);
    t.i0.push_back(i);
    t.i1.push_back(std::min(i + 1, n - 1));
    t.w0.push_back(1.0f - l1);
    t.w1.push_back(l1);
  }
  return t;
}

at::Tensor upsample2x(const at::Tensor& x) {
  if (x.dim() == 5 && x.device().is_cpu() && x.numel() > 0) {
    if (x.scalar_type() == at::kFloat) return upsample2x_cpu(x);
    if (x.scalar_type() == at::kBFloat16)  // autocast: interpolate in float32
      return upsample2x_cpu(x.to(at::kFloat)).to(at::kBFloat16);
  }
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

namespace {

// Group normalisation of a bf16 (N,C,...) tensor with float32 statistics and affine parameters
// and a bf16 result: the arithmetic of group_norm(x.float(), ...).to(bf16) without the two
// float32 copies (3x less memory traffic, no float32 temporaries at full resolution). No
// autograd: inference only.
inline __attribute__((always_inline)) void group_norm_bf16_groups(
    const uint16_t* x, uint16_t* y, int64_t begin, int64_t end, int64_t channels, int64_t groups,
    int64_t spatial, const float* gamma, const float* beta, double eps) {
  const int64_t cpg = channels / groups, n_group = cpg * spatial;
  for (int64_t ng = begin; ng < end; ++ng) {
    const uint16_t* xg = x + ng * n_group;
    uint16_t* yg = y + ng * n_group;
    double sum = 0, sum_sq = 0;
    constexpr int64_t kChunk = 2048;  // float partial sums, added up in double
    for (int64_t i0 = 0; i0 < n_group; i0 += kChunk) {
      const int64_t i1 = std::min(n_group, i0 + kChunk);
      float s[8] = {}, q[8] = {};  // 8 independent lanes: the loop vectorises
      int64_t i = i0;
      for (; i + 8 <= i1; i += 8)
        for (int j = 0; j < 8; ++j) {
          const float v = bf16_to_float(xg[i + j]);
          s[j] += v;
          q[j] += v * v;
        }
      for (; i < i1; ++i) {
        const float v = bf16_to_float(xg[i]);
        s[0] += v;
        q[0] += v * v;
      }
      for (int j = 0; j < 8; ++j) {
        sum += s[j];
        sum_sq += q[j];
      }
    }
    const double mean = sum / static_cast<double>(n_group);
    const double var = std::max(sum_sq / static_cast<double>(n_group) - mean * mean, 0.0);
    const double rstd = 1.0 / std::sqrt(var + eps);
    const int64_t g = ng % groups;
    for (int64_t c = 0; c < cpg; ++c) {
      const int64_t ch = g * cpg + c;
      const float scale = static_cast<float>(gamma[ch] * rstd);
      const float shift = static_cast<float>(beta[ch] - mean * gamma[ch] * rstd);
      const uint16_t* xc = xg + c * spatial;
      uint16_t* yc = yg + c * spatial;
      for (int64_t i = 0; i < spatial; ++i)
        yc[i] = float_to_bf16(bf16_to_float(xc[i]) * scale + shift);
    }
  }
}

#if defined(__x86_64__)
// The same code compiled for AVX2 (no FMA: rounds as the SSE2 build does).
__attribute__((target("avx2"))) void group_norm_bf16_avx2(const uint16_t* x, uint16_t* y,
                                                          int64_t begin, int64_t end,
                                                          int64_t channels, int64_t groups,
                                                          int64_t spatial, const float* gamma,
                                                          const float* beta, double eps) {
  group_norm_bf16_groups(x, y, begin, end, channels, groups, spatial, gamma, beta, eps);
}
#endif

at::Tensor group_norm_bf16_inference(const at::Tensor& input, int64_t groups,
                                     const at::Tensor& weight, const at::Tensor& bias, double eps) {
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty_like(x);
  const at::Tensor w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  const int64_t n = x.size(0), c = x.size(1), spatial = x.numel() / std::max<int64_t>(1, n * c);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  const float *gp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  at::parallel_for(0, n * groups, 1, [&](int64_t begin, int64_t end) {
#if defined(__x86_64__)
    static const bool avx2 = __builtin_cpu_supports("avx2");
    if (avx2) return group_norm_bf16_avx2(xp, yp, begin, end, c, groups, spatial, gp, bp, eps);
#endif
    group_norm_bf16_groups(xp, yp, begin, end, c, groups, spatial, gp, bp, eps);
  });
  return y;
}

}  // namespace

at::Tensor NormImpl::forward(const at::Tensor& x) {
  const int64_t groups = options.groups == 0 ? options.channels : options.groups;
  if (x.scalar_type() != weight.scalar_type() &&
      (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf)) {
    // Under bf16 autocast the convolutions hand over bf16, which LibTorch 1.13's CPU group_norm
    // refuses with float32 parameters: normalise in float32 (statistics and affine), return x's
    // type. Inference on a CPU: one pass over the bf16 data, no float32 copies.
    if (x.scalar_type() == at::kBFloat16 && x.device().is_cpu() && !at::GradMode::is_enabled() &&
        x.dim() >= 2)
      return group_norm_bf16_inference(x, groups, weight, bias, options.eps);
    return torch::group_norm(x.to(at::kFloat), groups, weight, bias, options.eps)
        .to(x.scalar_type());
  }
  return torch::group_norm(x, groups, weight, bias, options.eps);
}

// ---------------------------------------------------------------- ConvNormAct
ConvNormActImpl::ConvNormActImpl(const ConvNormActOptions& opt) : options(opt) {
  conv = register_module(
      "conv", conv3d(options.in, options.out, options.kernel, options.stride, options.bias));
  norm = register_module("norm", Norm(NormOptions{options.out, options.norm_groups}));
}

at::Tensor ConvNormActImpl::forward(const at::Tensor& x) {
  return activate_(norm(conv_forward(conv, x)), options.act);
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
    at::Tensor y = conv_forward(conv1, activate_(norm1(x), act));
    y = conv_forward(conv2, activate_(norm2(y), act));
    return x + y;
  }
  at::Tensor y = activate_(norm1(conv_forward(conv1, x)), act);
  y = activate_(norm2(conv_forward(conv2, y)), act);
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
