#pragma once
// The one set of blocks the five networks are built from (docs/design.md §3): affine group/instance
// normalisation, conv → norm → activation, the residual block in its two orderings
// (post-activation as in the released student, pre-activation as in Myronenko's and Lachinov's
// networks), the 1×1-conv + trilinear ×2 upsampling, and the input-size check every network runs.
//
// Tensors are (B,C,D,H,W). Parameter names follow PyTorch (Conv3d: weight[, bias]; norms: weight,
// bias), so state_dict names read like a PyTorch model's.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string>
#include <vector>

namespace kdseg {

enum class Act { relu, leaky_relu };  // leaky_relu has slope 0.01 (Isensee; the student)
// In place, on a tensor nothing else reads (every activation follows a norm or an upsampling,
// whose output is fresh): autograd then keeps the activation's result, which the next convolution
// keeps anyway, instead of a second full-size tensor (its input) until the backward pass.
at::Tensor activate_(at::Tensor x, Act act);

// A 3D convolution with "same" padding for odd kernels (kernel 2 stride 2 pads nothing).
torch::nn::Conv3d conv3d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                         bool bias = false, int64_t groups = 1);

// conv(x); a 3×3×3 "same" convolution (stride 1, padding 1, no groups) through narrow_conv3d,
// whose kernels take the narrow sides and the wide weight gradients in float32 training on a CPU.
at::Tensor conv_forward(torch::nn::Conv3d conv, const at::Tensor& x);

// Trilinear ×2 upsampling, align_corners = false (as everywhere in kdseg).
at::Tensor upsample2x(const at::Tensor& x);

// Its taps along one axis of n voxels: output o (0 ≤ o < 2n) reads inputs i0[o] and i1[o] with
// weights w0[o] + w1[o] = 1, from LibTorch's source index max(0, (o + 0.5)/2 − 0.5). upsample2x
// and the oneDNN student's upsampling both read these.
struct UpsampleTaps {
  std::vector<int64_t> i0, i1;
  std::vector<float> w0, w1;
};
UpsampleTaps upsample_taps(int64_t n);

// Affine normalisation over channel groups: GroupNorm(groups), or InstanceNorm when groups == 0
// (one group per channel; same maths as InstanceNorm3d(affine=True), no running statistics).
// Parameters `weight` (init 1) and `bias` (init 0), shape (C).
struct NormOptions {
  int64_t channels = 16;  // e.g. 32
  int64_t groups = 8;     // 0 = instance norm; e.g. 8 (Myronenko's GroupNorm(8))
  double eps = 1e-5;      // added to the variance, as PyTorch
};

class NormImpl : public torch::nn::Module {
 public:
  explicit NormImpl(const NormOptions& options);
  at::Tensor forward(const at::Tensor& x);  // (B,C,D,H,W) → same

  NormOptions options;
  at::Tensor weight, bias;
};
TORCH_MODULE(Norm);

// conv (k³, stride s) → norm → activation: one "stage conv" of the No-New-Net UNet.
struct ConvNormActOptions {
  int64_t in = 4;             // input channels, e.g. 30
  int64_t out = 16;           // output channels, e.g. 60
  int64_t kernel = 3;         // e.g. 3
  int64_t stride = 1;         // 2 = strided downsampling conv
  bool bias = false;          // conv bias (a norm follows, which cancels it)
  int64_t norm_groups = 0;    // 0 = instance norm, e.g. 8 for GroupNorm(8)
  Act act = Act::leaky_relu;  // e.g. Act::relu
};

class ConvNormActImpl : public torch::nn::Module {
 public:
  explicit ConvNormActImpl(const ConvNormActOptions& options);
  at::Tensor forward(const at::Tensor& x);  // (B,in,D,H,W) → (B,out,D/s,H/s,W/s)

  ConvNormActOptions options;
  torch::nn::Conv3d conv{nullptr};
  Norm norm{nullptr};
};
TORCH_MODULE(ConvNormAct);

// Residual block with identity shortcut, channels in == out, two conv3³:
//   post-activation (student, as released):  x + act(norm2(conv2(act(norm1(conv1(x))))))
//   pre-activation (Myronenko; Lachinov):     x + conv2(act(norm2(conv1(act(norm1(x))))))
// Children: conv1, norm1, conv2, norm2.
struct ResBlockOptions {
  int64_t channels = 16;        // e.g. 128
  int64_t norm_groups = 8;      // 0 = instance norm
  Act act = Act::leaky_relu;    // e.g. Act::relu
  bool pre_activation = false;  // see above
  bool bias = false;            // pre-activation only: bias on conv2, whose output is added to
                                // the identity (e.g. true in the cascade, MXNet's default). Every
                                // other conv of a block is followed by a norm that would cancel a
                                // bias, so it has none.
  int64_t conv_groups = 1;      // >1: grouped convs, one group per modality encoder (cascade)
};

class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(const ResBlockOptions& options);
  at::Tensor forward(const at::Tensor& x);  // (B,C,D,H,W) → same

  ResBlockOptions options;
  torch::nn::Conv3d conv1{nullptr}, conv2{nullptr};
  Norm norm1{nullptr}, norm2{nullptr};
};
TORCH_MODULE(ResBlock);

// n residual blocks in a row (state_dict names "0.conv1.weight", "1.conv1.weight", …).
torch::nn::Sequential res_stage(int64_t n_blocks, const ResBlockOptions& options);

// 1×1×1 conv (in → out) then trilinear ×2. The conv runs at the coarse resolution: for the
// student, whose released code upsamples first, the two orders are the same function (a 1×1 conv
// commutes with trilinear interpolation, whose weights sum to 1) at 1/8 of the cost.
class UpConvImpl : public torch::nn::Module {
 public:
  UpConvImpl(int64_t in, int64_t out, bool bias = false);
  at::Tensor forward(const at::Tensor& x);  // (B,in,D,H,W) → (B,out,2D,2H,2W)

  torch::nn::Conv3d conv{nullptr};
};
TORCH_MODULE(UpConv);

// Throws kdseg::Error unless x is (B, in_channels, D, H, W) with D, H, W positive multiples of
// `stride`; the message names the architecture, the size and the multiple.
void check_input(const at::Tensor& x, int64_t in_channels, int64_t stride, const std::string& arch);

// Throws kdseg::Error (naming `arch`) unless `channels` is divisible by `groups` (>0).
void check_divisible(int64_t channels, int64_t groups, const std::string& arch, const char* what);

// "16x16x32" for messages.
std::string shape_string(const std::vector<int64_t>& dims);

}  // namespace kdseg
