// The student's oneDNN forward pass (infer/onednn_student.h) against LibTorch's: same logits up to
// bf16 rounding, for widths that fill the 16-channel blocks and for widths that are padded, one and
// two samples, a non-cubic input; and how predict chooses it. Skipped (with the reason) where this
// build or CPU has no oneDNN bf16 path.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kdseg/infer/ensemble.h"
#include "kdseg/infer/onednn_student.h"
#include "kdseg/infer/sliding_window.h"
#include "kdseg/models/registry.h"
#include "kdseg/models/student.h"
#include "kdseg/runtime/autocast.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

Student make_student(const nlohmann::json& options, int seed) {
  torch::manual_seed(seed);
  Student net(options.get<StudentOptions>());
  // Non-trivial norm parameters, so that a swapped gamma/beta or group split shows.
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters())
    if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
  net->eval();
  return net;
}

struct Errors {
  double onednn = 0, autocast = 0, scale = 0;  // max |logit - fp32 logit|; max |fp32 logit|
};

Errors compare(Student& net, const at::Tensor& x) {
  c10::InferenceMode guard;
  const at::Tensor ref = net->forward(x).logits;
  at::Tensor bf16;
  {
    AutocastGuard autocast(true, "cpu");
    bf16 = net->forward(x).logits.to(at::kFloat);
  }
  const at::Tensor fast = OneDnnStudent(*net).forward(x);
  EXPECT_EQ(fast.sizes(), ref.sizes());
  EXPECT_EQ(fast.scalar_type(), at::kFloat);
  return {(fast - ref).abs().max().item<double>(), (bf16 - ref).abs().max().item<double>(),
          ref.abs().max().item<double>()};
}

// bf16 rounding of the activations: the same order of error as LibTorch's bf16 autocast (a wrong
// weight, group, tap or slab would be off by the logits' own size).
void expect_bf16_rounding_only(const Errors& e, const std::string& what) {
  EXPECT_GT(e.scale, 0.1) << what << ": logits of a random net should not be ~0";
  EXPECT_LT(e.onednn, 0.05 * e.scale) << what << ": autocast's own error " << e.autocast;
  EXPECT_LT(e.onednn, 3 * e.autocast + 1e-3) << what;
  std::printf("%s: max |diff| to fp32 %.4f (LibTorch bf16 %.4f), max |logit| %.3f\n", what.c_str(),
              e.onednn, e.autocast, e.scale);
}

#define SKIP_WITHOUT_ONEDNN(net)                                      \
  do {                                                                \
    const std::string why = onednn_student_unavailable(*(net));       \
    if (!why.empty()) GTEST_SKIP() << "no oneDNN path here: " << why; \
  } while (0)

TEST(OneDnnStudent, GivesLibTorchsLogitsWithFullChannelBlocks) {
  Student net = make_student({{"widths", {16, 32, 64}},
                              {"encoder_blocks", {1, 2, 1}},
                              {"decoder_blocks", {1, 1}},
                              {"norm_groups", 8}},
                             1);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  torch::manual_seed(2);
  const at::Tensor x = torch::randn({2, 4, 16, 24, 32});
  expect_bf16_rounding_only(compare(net, x), "full blocks");
}

TEST(OneDnnStudent, GivesLibTorchsLogitsWithPaddedChannels) {
  // The tests' tiny student: widths 8 fill half a block (the padding must stay zero).
  Student net = make_student({{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}}, 3);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({1, 4, 32, 32, 24});
  expect_bf16_rounding_only(compare(net, x), "padded");
}

TEST(OneDnnStudent, InPlaceSlabsAtEveryDepth) {
  // One channel block per level: the blocks' second convolutions and the merge run in place, slab
  // by slab of 8 depth rows; depths below, at and off a multiple of the slab (a short last slab).
  Student net = make_student({{"widths", {16, 16}},
                              {"encoder_blocks", {2, 1}},
                              {"decoder_blocks", {2}},
                              {"norm_groups", 4}},
                             11);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  for (int64_t depth : {2, 8, 18, 26}) {
    torch::manual_seed(12);
    expect_bf16_rounding_only(compare(net, torch::randn({1, 4, depth, 12, 10})),
                              "depth " + std::to_string(depth));
  }
}

TEST(OneDnnStudent, SeesTheWeightsOfTheNetItWasMadeFrom) {
  // Two nets with different weights give different logits through oneDNN: the comparison above
  // cannot pass by accident of a weight-independent output.
  Student a =
      make_student({{"widths", {16, 32}}, {"encoder_blocks", {1, 1}}, {"decoder_blocks", {1}}}, 5);
  SKIP_WITHOUT_ONEDNN(a.ptr());
  Student b =
      make_student({{"widths", {16, 32}}, {"encoder_blocks", {1, 1}}, {"decoder_blocks", {1}}}, 6);
  torch::manual_seed(7);
  const at::Tensor x = torch::randn({1, 4, 16, 16, 16});
  c10::InferenceMode guard;
  const at::Tensor ya = OneDnnStudent(*a).forward(x), yb = OneDnnStudent(*b).forward(x);
  EXPECT_GT((ya - yb).abs().max().item<double>(), 0.1);
  // Same net twice: the same bytes (deterministic).
  EXPECT_TRUE(at::equal(ya, OneDnnStudent(*a).forward(x)));
  EXPECT_THROW(OneDnnStudent(*a).forward(torch::randn({1, 4, 16, 16, 15})), Error)
      << "a size that is not a multiple of the stride is refused";
}

// predict_mirrored runs the mirror TTA inside (each flip read from the input, its logits written
// back mirrored and summed as probabilities): the same bytes as the plain way, forward() on
// flipped copies, LibTorch's sigmoid, flipped back, summed in order, divided.
at::Tensor mirrored_by_hand(const OneDnnStudent& net, const at::Tensor& x,
                            const std::vector<std::vector<int64_t> >& flips) {
  at::Tensor acc;
  for (const auto& dims : flips) {
    at::Tensor p = dims.empty() ? torch::sigmoid(net.forward(x))
                                : torch::sigmoid(net.forward(x.flip(dims))).flip(dims);
    acc = acc.defined() ? acc.add_(p) : p;
  }
  return acc.div_(static_cast<double>(flips.size()));
}

TEST(OneDnnStudent, MirroredPredictionIsTheFlippedForwardPassesAveraged) {
  Student net = make_student({{"widths", {8, 8, 16}},
                              {"encoder_blocks", {1, 1, 1}},
                              {"decoder_blocks", {1, 1}},
                              {"norm_groups", 4}},
                             9);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  torch::manual_seed(10);
  const at::Tensor x = torch::randn({2, 4, 16, 24, 20});
  c10::InferenceMode guard;
  const OneDnnStudent fast(*net);
  for (const std::string mode : {"none", "xy", "all"}) {
    const auto flips = mirror_sets(mode);
    const at::Tensor want = mirrored_by_hand(fast, x, flips);
    const at::Tensor got = fast.predict_mirrored(x, flips);
    ASSERT_EQ(got.sizes(), want.sizes()) << mode;
    EXPECT_TRUE(at::equal(got, want))
        << mode << ": max |diff| " << (got - want).abs().max().item<double>();
  }
  // The flips matter: the 4-flip mean is not the plain pass (a test that ignored them would pass
  // above only if both sides ignored them).
  EXPECT_GT((fast.predict_mirrored(x, mirror_sets("xy")) - torch::sigmoid(fast.forward(x)))
                .abs()
                .max()
                .item<double>(),
            1e-3);

  // Padded inside: a 13×21×17 input on a 16×24×24 grid is the zero-padded input's result, cropped.
  const at::Tensor small = x.slice(2, 0, 13).slice(3, 0, 21).slice(4, 0, 17).contiguous();
  const at::Tensor padded = at::constant_pad_nd(small, {0, 7, 0, 3, 0, 3});
  for (const std::string mode : {"none", "xy", "all"}) {
    const auto flips = mirror_sets(mode);
    const at::Tensor want =
        mirrored_by_hand(fast, padded, flips).slice(2, 0, 13).slice(3, 0, 21).slice(4, 0, 17);
    const at::Tensor got = fast.predict_mirrored(small, flips, {16, 24, 24});
    ASSERT_EQ(got.sizes(), want.sizes()) << mode;
    EXPECT_TRUE(at::equal(got, want))
        << mode << " padded: max |diff| " << (got - want).abs().max().item<double>();
  }
  EXPECT_THROW(fast.predict_mirrored(small, mirror_sets("xy"), {16, 20, 24}), Error)
      << "a grid smaller than the input";
  EXPECT_THROW(fast.predict_mirrored(small, mirror_sets("xy"), {16, 24, 22}), Error)
      << "a grid off the stride";
  EXPECT_THROW(fast.predict_mirrored(x, {{1}}), Error) << "the channel axis is not a flip";
}

TEST(OneDnnStudent, PredictChoosesItForABf16StudentOnTheCpu) {
  Student student =
      make_student({{"widths", {16, 32}}, {"encoder_blocks", {1, 1}}, {"decoder_blocks", {1}}}, 8);
  SegNet unet = make_net("unet", {{"widths", {4, 8, 16, 32}}});
  InferenceOptions opt;
  opt.bf16 = true;
  const bool here = onednn_student_unavailable(*student).empty();
  EXPECT_EQ(uses_onednn(*student, opt), here);  // engine "auto"
  EXPECT_FALSE(uses_onednn(*unet, opt));
  opt.engine = "torch";
  EXPECT_FALSE(uses_onednn(*student, opt));
  opt.engine = "onednn";
  EXPECT_THROW(uses_onednn(*unet, opt), Error) << "only the student runs through oneDNN";
  opt.bf16 = false;
  EXPECT_THROW(uses_onednn(*student, opt), Error) << "fp32 is LibTorch's";
  opt.engine = "fast";
  EXPECT_THROW(uses_onednn(*student, opt), Error) << "unknown engine name";
  opt.engine = "auto";
  EXPECT_FALSE(uses_onednn(*student, opt)) << "auto without bf16 is LibTorch";
}

}  // namespace
}  // namespace kdseg
