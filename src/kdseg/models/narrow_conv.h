#pragma once
// 3×3×3 "same" convolutions (stride 1, padding 1, no groups) with a narrow side, in float32 on a
// CPU: a network's first convolution (4 modalities in) and the student's head (3 regions out),
// and the weight gradient of those with 8-16 channels on both sides (kWideChannels below).
//
// LibTorch 1.13 hands these to oneDNN, which pads a narrow side to 16 channels and, for 4 input
// channels, computes the weight gradient at ~20 GFLOP/s. Measured at 144×144×128, 2 threads:
// 16→3 costs as much as 16→16 (forward 0.14 s, input gradient 0.18 s, weight gradient 0.14 s),
// and the weight gradient of 4→16 takes 0.48 s against 0.14 s for 16→16 (4× the work). Here the
// narrow side is never padded: the kernels below run over rows of 16 voxels with the narrow side's
// channels held in registers.
//
// narrow_conv3d is a drop-in for conv3d(x, weight, bias, stride 1, padding 1) with autograd; it
// falls back to LibTorch where narrow_conv3d_applies is false (another dtype or device, a wide
// convolution). Double backward is not supported.
#include <ATen/core/Tensor.h>

namespace kdseg {

// A side of at most this many channels is narrow.
constexpr int64_t kNarrowChannels = 4;

// Wider convolutions up to this many channels on both sides, out a multiple of 8, take kdseg's
// weight gradient (channels-last kernel; forward and input gradient stay oneDNN's). LibTorch
// 1.13's is oneDNN's im2col + GEMM for every padded 3×3×3 case. Measured on a 2-core AVX2 EPYC,
// batch 2: 8→8 at 48³ 15.6 ms against 37.9 ms, 16→16 at 24³ 8.7 against 12.6; 32→32 at 12³
// 6.1 against 4.5, so wider ones stay LibTorch's (each against at::convolution_backward in one
// process).
constexpr int64_t kWideChannels = 16;
bool wide_conv3d_applies(int64_t in, int64_t out);

// True when x is a float32 (B,C,D,H,W) CPU tensor and weight (out,C,3,3,3) float32 with
// out ≤ kNarrowChannels or C ≤ kNarrowChannels or wide_conv3d_applies(C, out), CPU autocast is
// off and no NarrowConvOff lives.
bool narrow_conv3d_applies(const at::Tensor& x, const at::Tensor& weight);

// While one lives, narrow_conv3d on this thread hands every convolution to LibTorch: the
// in-process baseline of bench_train_step --aten-baseline and of the tests.
class NarrowConvOff {
 public:
  explicit NarrowConvOff(bool off = true);
  ~NarrowConvOff();
  NarrowConvOff(const NarrowConvOff&) = delete;
  NarrowConvOff& operator=(const NarrowConvOff&) = delete;

 private:
  bool was_off_;
};

// conv3d(x, weight, bias, stride 1, padding 1), differentiable in all three; bias may be undefined.
// The kernels run where a backward pass will follow (grad mode on and an input that requires
// grad); inference gets LibTorch's forward.
at::Tensor narrow_conv3d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The kernels, without autograd (tests and benches). Any channel counts; fast where the side named
// is narrow.
// Forward, narrow output: (B,C,D,H,W) → (B,out,D,H,W).
at::Tensor narrow_conv3d_forward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias);
// Gradient of the loss for the weight, (out,C,3,3,3), from grad_out (B,out,D,H,W) and x.
at::Tensor narrow_conv3d_weight_grad(const at::Tensor& grad_out, const at::Tensor& x);
// The same for out a multiple of 8 and any C, through channels-last copies (wide sides).
at::Tensor wide_conv3d_weight_grad(const at::Tensor& grad_out, const at::Tensor& x);
// Gradient for the input, (B,C,D,H,W), from grad_out (B,out,D,H,W): narrow output.
at::Tensor narrow_conv3d_input_grad(const at::Tensor& grad_out, const at::Tensor& weight);

}  // namespace kdseg
