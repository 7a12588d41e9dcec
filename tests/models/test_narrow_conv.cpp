// kdseg::narrow_conv3d against LibTorch's conv3d: the forward pass and the three gradients on
// narrow-output and narrow-input convolutions (with rows that are not whole 16-voxel vectors and
// channel counts that split into several register blocks), the cases it hands to LibTorch, the
// bitwise repeatability of its weight gradient, and the student trained through it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kdseg/models/narrow_conv.h"
#include "kdseg/models/net.h"
#include "kdseg/models/registry.h"
#include "kdseg/runtime/autocast.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"

namespace kdseg {
namespace {

// max |a − b| / max |b|
double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-30, b.abs().max().item<double>());
}

struct Grads {
  at::Tensor y, gx, gw, gb;
};

// y = conv(x, w, b), then the gradients of Σ y·r for a fixed random r.
Grads run(bool narrow, const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0,
          const at::Tensor& r) {
  const at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
  const at::Tensor b = b0.defined() ? b0.clone().requires_grad_() : at::Tensor();
  const at::Tensor y = narrow ? narrow_conv3d(x, w, b) : at::conv3d(x, w, b, 1, 1);
  (y * r).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : at::Tensor()};
}

struct Shape {
  int64_t batch, in, out, d, h, w;
  bool bias;
};

class NarrowConvShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(NarrowConvShapes, ForwardAndGradientsMatchLibTorch) {
  const Shape s = GetParam();
  torch::manual_seed(7);
  const at::Tensor x = torch::randn({s.batch, s.in, s.d, s.h, s.w});
  const at::Tensor w = torch::randn({s.out, s.in, 3, 3, 3}) * 0.2;
  const at::Tensor b = s.bias ? torch::randn({s.out}) : at::Tensor();
  const at::Tensor r = torch::randn({s.batch, s.out, s.d, s.h, s.w});
  ASSERT_TRUE(narrow_conv3d_applies(x, w));
  const Grads ours = run(true, x, w, b, r), ref = run(false, x, w, b, r);
  EXPECT_LT(rel_diff(ours.y, ref.y), 1e-5);
  EXPECT_LT(rel_diff(ours.gx, ref.gx), 1e-5);
  EXPECT_LT(rel_diff(ours.gw, ref.gw), 1e-5);
  if (s.bias) {
    EXPECT_LT(rel_diff(ours.gb, ref.gb), 1e-5);
  }
  // Not LibTorch's node: the narrow kernels ran.
  const at::Tensor y = narrow_conv3d(x, w.clone().requires_grad_(), b);
  EXPECT_EQ(y.grad_fn()->name().find("ConvolutionBackward"), std::string::npos)
      << y.grad_fn()->name();
}

INSTANTIATE_TEST_SUITE_P(
    NarrowConv, NarrowConvShapes,
    ::testing::Values(Shape{2, 16, 3, 5, 6, 37, true},   // the student's head; W = 2 vectors + 5
                      Shape{1, 8, 1, 4, 3, 16, false},   // one output, one whole vector
                      Shape{1, 4, 16, 6, 5, 20, false},  // a first convolution (4 modalities)
                      Shape{2, 3, 13, 3, 4, 9, true},    // 13 outputs: weight blocks 6 + 6 + 1
                      Shape{1, 2, 2, 1, 1, 1, true}));   // one voxel

TEST(NarrowConv, KernelsSplitWideSidesIntoBlocks) {
  torch::manual_seed(3);
  // 11 outputs: forward blocks 8 + 3; input gradient with 19 channels: blocks 8 + 8 + 3.
  const at::Tensor x = torch::randn({1, 19, 4, 5, 33}), w = torch::randn({11, 19, 3, 3, 3});
  const at::Tensor b = torch::randn({11}), g = torch::randn({1, 11, 4, 5, 33});
  EXPECT_LT(rel_diff(narrow_conv3d_forward(x, w, b), at::conv3d(x, w, b, 1, 1)), 1e-5);
  const auto ref = at::convolution_backward(g, x, w, c10::nullopt, {1, 1, 1}, {1, 1, 1}, {1, 1, 1},
                                            false, {0, 0, 0}, 1, {true, true, false});
  EXPECT_LT(rel_diff(narrow_conv3d_input_grad(g, w), std::get<0>(ref)), 1e-5);
  EXPECT_LT(rel_diff(narrow_conv3d_weight_grad(g, x), std::get<1>(ref)), 1e-5);
}

TEST(NarrowConv, WeightGradientIsTheSameBitsEveryRun) {
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({1, 16, 24, 20, 32}), g = torch::randn({1, 3, 24, 20, 32});
  const at::Tensor first = narrow_conv3d_weight_grad(g, x);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(narrow_conv3d_weight_grad(g, x), first));
}

// The wide weight gradient (both sides above kNarrowChannels, out a multiple of 8) against
// LibTorch's, on shapes with every input-block remainder and odd sizes.
TEST(NarrowConv, WideWeightGradientIsLibTorchs) {
  torch::manual_seed(11);
  for (const auto& [n_in, n_out, d, h, w] : std::vector<std::array<int64_t, 5>>{{8, 8, 6, 7, 9},
                                                                                {16, 16, 5, 4, 3},
                                                                                {5, 8, 4, 6, 5},
                                                                                {6, 16, 3, 5, 7},
                                                                                {7, 8, 2, 3, 4}}) {
    const at::Tensor x = torch::randn({2, n_in, d, h, w}), g = torch::randn({2, n_out, d, h, w});
    const at::Tensor wt = torch::randn({n_out, n_in, 3, 3, 3});
    const at::Tensor ref =
        std::get<1>(at::convolution_backward(g, x, wt, c10::nullopt, {1, 1, 1}, {1, 1, 1},
                                             {1, 1, 1}, false, {0, 0, 0}, 1, {false, true, false}));
    const at::Tensor got = wide_conv3d_weight_grad(g, x);
    EXPECT_LT((got - ref).abs().max().item<float>(), 1e-4 * ref.abs().max().item<float>())
        << n_in << " -> " << n_out;
    EXPECT_TRUE(at::equal(got, wide_conv3d_weight_grad(g, x)));  // the same bits again
  }
  // Through autograd: narrow_conv3d's three gradients are LibTorch's.
  const at::Tensor x = torch::randn({2, 8, 6, 5, 7}).requires_grad_();
  const at::Tensor wt = (0.1 * torch::randn({16, 8, 3, 3, 3})).requires_grad_();
  const at::Tensor b = torch::randn({16}).requires_grad_();
  ASSERT_TRUE(narrow_conv3d_applies(x, wt));
  const at::Tensor up = torch::randn({2, 16, 6, 5, 7});
  auto grads = torch::autograd::grad({(narrow_conv3d(x, wt, b) * up).sum()}, {x, wt, b});
  auto ref = torch::autograd::grad({(at::conv3d(x, wt, b, 1, 1) * up).sum()}, {x, wt, b});
  for (size_t k = 0; k < 3; ++k)
    EXPECT_LT((grads[k] - ref[k]).abs().max().item<float>(),
              1e-4 * ref[k].abs().max().item<float>())
        << k;
  EXPECT_THROW(
      wide_conv3d_weight_grad(torch::randn({1, 6, 3, 3, 3}), torch::randn({1, 8, 3, 3, 3})), Error);
}

TEST(NarrowConv, HandsOtherConvolutionsToLibTorch) {
  torch::manual_seed(5);
  const at::Tensor x = torch::randn({1, 16, 4, 4, 8}), w = torch::randn({3, 16, 3, 3, 3});
  const at::Tensor b = torch::randn({3});
  // Wider than kWideChannels on both sides, bf16, the wrong kernel size: LibTorch's result, bit
  // for bit.
  const at::Tensor w_wide = torch::randn({32, 16, 3, 3, 3});
  EXPECT_FALSE(narrow_conv3d_applies(x, w_wide));
  EXPECT_TRUE(
      at::equal(narrow_conv3d(x, w_wide, at::Tensor()), at::conv3d(x, w_wide, at::Tensor(), 1, 1)));
  const at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
  EXPECT_FALSE(narrow_conv3d_applies(xb, wb));
  EXPECT_TRUE(at::equal(narrow_conv3d(xb, wb, b.to(at::kBFloat16)),
                        at::conv3d(xb, wb, b.to(at::kBFloat16), 1, 1)));
  EXPECT_FALSE(narrow_conv3d_applies(x, torch::randn({3, 16, 1, 1, 1})));
  {
    AutocastGuard autocast(true, "cpu");  // LibTorch's bf16 convolution, as every other layer
    EXPECT_FALSE(narrow_conv3d_applies(x, w));
    EXPECT_EQ(narrow_conv3d(x, w, b).scalar_type(), at::kBFloat16);
  }
  {
    NarrowConvOff off;
    EXPECT_FALSE(narrow_conv3d_applies(x, w));
    const at::Tensor y = narrow_conv3d(x, w.clone().requires_grad_(), b);
    EXPECT_NE(y.grad_fn()->name().find("ConvolutionBackward"), std::string::npos);
  }
  EXPECT_TRUE(narrow_conv3d_applies(x, w));
  // Without a backward pass to come: LibTorch's forward, which needs no padded copy.
  EXPECT_TRUE(at::equal(narrow_conv3d(x, w, b), at::conv3d(x, w, b, 1, 1)));
  EXPECT_THROW(narrow_conv3d_forward(x, torch::randn({3, 8, 3, 3, 3}), b), Error);
  EXPECT_THROW(narrow_conv3d_weight_grad(torch::randn({1, 3, 4, 4, 7}), x), Error);
  EXPECT_THROW(narrow_conv3d_input_grad(torch::randn({1, 2, 4, 4, 8}), w), Error);
}

// A tiny student's loss and gradients with the narrow kernels and with LibTorch's convolutions.
TEST(NarrowConv, StudentTrainsTheSameThroughIt) {
  auto grads = [](bool narrow) {
    torch::manual_seed(11);
    auto net = make_net("student", test::tiny_config("student"));
    net->train();
    const at::Tensor x = torch::randn({1, 4, 16, 16, 16});
    NarrowConvOff off(!narrow);
    const at::Tensor loss = net->forward(x).logits.pow(2).mean();
    loss.backward();
    std::vector<at::Tensor> g{loss.detach()};
    for (const auto& p : net->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  const auto ours = grads(true), ref = grads(false);
  ASSERT_EQ(ours.size(), ref.size());
  EXPECT_LT(rel_diff(ours[0], ref[0]), 1e-5);
  for (size_t i = 1; i < ours.size(); ++i) EXPECT_LT(rel_diff(ours[i], ref[i]), 1e-4) << i;
}

}  // namespace
}  // namespace kdseg
