// The student's oneDNN forward pass (infer/onednn_student.h) against LibTorch's: in bf16 the same
// logits up to bf16 rounding, in float32 up to the order of summation, for widths that fill the
// channel blocks and for widths that are padded, one and two samples, a non-cubic input; and how
// predict chooses it. Skipped (with the reason) where this build or CPU has no oneDNN path for
// the precision.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

#include "kdseg/infer/ensemble.h"
#include "kdseg/infer/onednn_student.h"
#include "kdseg/infer/sliding_window.h"
#include "kdseg/models/registry.h"
#include "kdseg/models/student.h"
#include "kdseg/models/unet.h"
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

// The students the comparisons run: full blocks of 16 channels; the tests' tiny student (widths
// 8 fill half a block: the padding must stay zero); one block per level (the blocks' second
// convolutions and the merge in place, slab by slab).
const nlohmann::json kFullBlocks = {{"widths", {16, 32, 64}},
                                    {"encoder_blocks", {1, 2, 1}},
                                    {"decoder_blocks", {1, 1}},
                                    {"norm_groups", 8}};
const nlohmann::json kTiny = {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}};
const nlohmann::json kOneBlockPerLevel = {
    {"widths", {16, 16}}, {"encoder_blocks", {2, 1}}, {"decoder_blocks", {2}}, {"norm_groups", 4}};

struct Errors {
  double onednn = 0, autocast = 0, scale = 0;  // max |logit - fp32 logit|; max |fp32 logit|
};

// Whether oneDNN was limited to AVX2 (the CTest entry OneDnnStudent.Float32OnAvx2 sets
// ONEDNN_MAX_CPU_ISA=AVX2, so that an AVX-512 machine runs the AVX2 path too).
bool avx2_only() {
  const char* isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  return isa && std::string(isa) == "AVX2";
}

// The float32 oneDNN pass against LibTorch's float32 logits: only the order of summation
// differs (a wrong weight, group, tap or slab would be off by the logits' own size).
void expect_fp32_summation_order_only(Student& net, const at::Tensor& x, const std::string& what) {
  c10::InferenceMode guard;
  const at::Tensor ref = net->forward(x).logits;
  const OneDnnStudent fast(*net, /*bf16=*/false);
  EXPECT_FALSE(fast.bf16());
  if (avx2_only()) {
    EXPECT_EQ(fast.block(), 8) << "ONEDNN_MAX_CPU_ISA=AVX2: blocks of 8";
  }
  const at::Tensor got = fast.forward(x);
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  const double err = (got - ref).abs().max().item<double>(), scale = ref.abs().max().item<double>();
  EXPECT_GT(scale, 0.1) << what << ": logits of a random net should not be ~0";
  EXPECT_LT(err, 1e-4 * scale + 1e-5) << what << " (float32)";
  std::printf("%s, float32 (blocks of %lld): max |diff| to LibTorch %.2e, max |logit| %.3f\n",
              what.c_str(), static_cast<long long>(fast.block()), err, scale);
}

#define SKIP_WITHOUT_ONEDNN_FP32(net)                                         \
  do {                                                                        \
    const std::string why = onednn_unavailable(*(net), false);                \
    if (!why.empty()) GTEST_SKIP() << "no oneDNN float32 path here: " << why; \
  } while (0)

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
    const std::string why = onednn_unavailable(*(net));               \
    if (!why.empty()) GTEST_SKIP() << "no oneDNN path here: " << why; \
  } while (0)

TEST(OneDnnStudent, GivesLibTorchsLogitsWithFullChannelBlocks) {
  Student net = make_student(kFullBlocks, 1);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  torch::manual_seed(2);
  const at::Tensor x = torch::randn({2, 4, 16, 24, 32});
  expect_bf16_rounding_only(compare(net, x), "full blocks");
}

TEST(OneDnnStudent, GivesLibTorchsLogitsWithPaddedChannels) {
  // The tests' tiny student: widths 8 fill half a block (the padding must stay zero).
  Student net = make_student(kTiny, 3);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  torch::manual_seed(4);
  const at::Tensor x = torch::randn({1, 4, 32, 32, 24});
  expect_bf16_rounding_only(compare(net, x), "padded");
}

TEST(OneDnnStudent, InPlaceSlabsAtEveryDepth) {
  // One channel block per level: the blocks' second convolutions and the merge run in place, slab
  // by slab of 8 depth rows; depths below, at and off a multiple of the slab (a short last slab).
  Student net = make_student(kOneBlockPerLevel, 11);
  SKIP_WITHOUT_ONEDNN(net.ptr());
  for (int64_t depth : {2, 8, 18, 26}) {
    torch::manual_seed(12);
    expect_bf16_rounding_only(compare(net, torch::randn({1, 4, depth, 12, 10})),
                              "depth " + std::to_string(depth));
  }
}

// The same three shapes in float32 (on an AVX2 CPU in blocks of 8: ONEDNN_MAX_CPU_ISA=AVX2 runs
// that path here).
TEST(OneDnnStudent, Float32GivesLibTorchsFloat32Logits) {
  Student full = make_student(kFullBlocks, 1);
  SKIP_WITHOUT_ONEDNN_FP32(full.ptr());
  torch::manual_seed(2);
  expect_fp32_summation_order_only(full, torch::randn({2, 4, 16, 24, 32}), "full blocks");
  Student padded = make_student(kTiny, 3);
  torch::manual_seed(4);
  expect_fp32_summation_order_only(padded, torch::randn({1, 4, 32, 32, 24}), "padded");
  // One block per level (16 channels; two blocks of 8 on AVX2): in place at 16, slab by slab.
  Student slabs = make_student(kOneBlockPerLevel, 11);
  for (int64_t depth : {2, 8, 18, 26}) {
    torch::manual_seed(12);
    expect_fp32_summation_order_only(slabs, torch::randn({1, 4, depth, 12, 10}),
                                     "depth " + std::to_string(depth));
  }
  // Width 8 everywhere: one block per level on AVX2 (in place there), half a block on AVX-512.
  Student eights = make_student(
      {{"widths", {8, 8}}, {"encoder_blocks", {2, 1}}, {"decoder_blocks", {2}}, {"norm_groups", 4}},
      13);
  for (int64_t depth : {8, 18}) {
    torch::manual_seed(14);
    expect_fp32_summation_order_only(eights, torch::randn({1, 4, depth, 12, 10}),
                                     "width 8, depth " + std::to_string(depth));
  }
}

at::Tensor mirrored_by_hand(const OneDnnNet& net, const at::Tensor& x,
                            const std::vector<std::vector<int64_t> >& flips);

// A teacher through oneDNN (make_onednn) against LibTorch on the same net: float32 up to the
// order of summation, bf16 within 3x LibTorch's own bf16 error; and its mirrored pass is its
// forward passes flipped and averaged. Both precisions where they run here.
void expect_teacher_like_libtorch(const std::string& arch, const nlohmann::json& options) {
  torch::manual_seed(21);
  SegNet net = make_net(arch, options);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->named_parameters())
      if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
  }
  net->eval();
  int ran = 0;
  for (const bool bf16 : {true, false}) {
    if (!onednn_unavailable(*net, bf16).empty()) continue;
    ++ran;
    torch::manual_seed(22);
    const at::Tensor x = torch::randn({2, 4, 16, 24, 32});
    c10::InferenceMode guard;
    const at::Tensor ref = net->forward(x).logits;
    at::Tensor autocast = ref;  // LibTorch's bf16 where bf16 runs (its error bounds ours)
    if (bf16) {
      AutocastGuard on(true, "cpu");
      autocast = net->forward(x).logits.to(at::kFloat);
    }
    const std::shared_ptr<OneDnnNet> fast = make_onednn(*net, bf16);
    ASSERT_TRUE(fast) << arch;
    const at::Tensor got = fast->forward(x);
    ASSERT_EQ(got.sizes(), ref.sizes());
    const double err = (got - ref).abs().max().item<double>();
    const double scale = ref.abs().max().item<double>();
    const double autocast_err = (autocast - ref).abs().max().item<double>();
    EXPECT_GT(scale, 0.1) << arch << ": logits of a random net should not be ~0";
    if (bf16)
      EXPECT_LT(err, 3 * autocast_err + 1e-3) << arch << " bf16: LibTorch's own " << autocast_err;
    else
      EXPECT_LT(err, 1e-4 * scale + 1e-5) << arch << " float32";
    std::printf(
        "%s %s (blocks of %lld): max |diff| to LibTorch fp32 %.2e (LibTorch bf16 %.2e), "
        "max |logit| %.3f\n",
        arch.c_str(), bf16 ? "bf16" : "float32", static_cast<long long>(fast->block()), err,
        autocast_err, scale);
    const auto flips = mirror_sets("xy");
    const at::Tensor want = mirrored_by_hand(*fast, x, flips);
    const double mirror_err = (fast->predict_mirrored(x, flips) - want).abs().max().item<double>();
    EXPECT_LE(mirror_err, bf16 ? 0.0 : 1e-6) << arch << (bf16 ? " bf16" : " float32");
  }
  if (ran == 0) GTEST_SKIP() << "no oneDNN path here: " << onednn_unavailable(*net, false);
}

// unet (OneDnnUNet): InstanceNorm, strided 3³ convolutions, the decoder's first convolution over
// [skip, up] as two, the upsampling without an activation, the 1×1 head. Widths that are not
// multiples of the block (6, 12: padded).
TEST(OneDnnStudent, UNetGivesLibTorchsLogits) {
  expect_teacher_like_libtorch("unet", {{"widths", {6, 12, 16, 24}}});
}

// resunet and resunet-vae (OneDnnResUNet): pre-activation blocks with ReLU, the residual by the
// convolution's sum, the skip added to the upsampling, the GroupNorm → ReLU head; the VAE's
// parameters are there and unused.
TEST(OneDnnStudent, ResUNetGivesLibTorchsLogits) {
  const nlohmann::json small = {{"widths", {8, 16, 32}},
                                {"encoder_blocks", {1, 2, 1}},
                                {"decoder_blocks", {1, 1}},
                                {"norm_groups", 4}};
  expect_teacher_like_libtorch("resunet", small);
  nlohmann::json vae = small;
  vae["vae_input_shape"] = {16, 16, 16};
  vae["vae_latent"] = 8;
  vae["vae_channels"] = 4;
  expect_teacher_like_libtorch("resunet-vae", vae);
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
  if (onednn_unavailable(*a, false).empty()) {  // float32 too
    EXPECT_TRUE(
        at::equal(OneDnnStudent(*a, false).forward(x), OneDnnStudent(*a, false).forward(x)));
  }
  EXPECT_THROW(OneDnnStudent(*a).forward(torch::randn({1, 4, 16, 16, 15})), Error)
      << "a size that is not a multiple of the stride is refused";
}

// predict_mirrored runs the mirror TTA inside (each flip read from the input, its logits written
// back mirrored and summed as probabilities): the same bytes as the plain way, forward() on
// flipped copies, LibTorch's sigmoid, flipped back, summed in order, divided.
at::Tensor mirrored_by_hand(const OneDnnNet& net, const at::Tensor& x,
                            const std::vector<std::vector<int64_t> >& flips) {
  at::Tensor acc;
  for (const auto& dims : flips) {
    at::Tensor p = dims.empty() ? torch::sigmoid(net.forward(x))
                                : torch::sigmoid(net.forward(x.flip(dims))).flip(dims);
    acc = acc.defined() ? acc.add_(p) : p;
  }
  return acc.div_(static_cast<double>(flips.size()));
}

// bf16: the same bytes. Float32: the probabilities come from LibTorch's sigmoid on another
// tensor shape, whose vector/scalar split can differ in the last bit.
void expect_same(const at::Tensor& got, const at::Tensor& want, bool bf16,
                 const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got - want).abs().max().item<double>();
  if (bf16)
    EXPECT_TRUE(at::equal(got, want)) << what << ": max |diff| " << err;
  else
    EXPECT_LT(err, 1e-6) << what << " (float32)";
}

TEST(OneDnnStudent, MirroredPredictionIsTheFlippedForwardPassesAveraged) {
  Student net = make_student({{"widths", {8, 8, 16}},
                              {"encoder_blocks", {1, 1, 1}},
                              {"decoder_blocks", {1, 1}},
                              {"norm_groups", 4}},
                             9);
  torch::manual_seed(10);
  const at::Tensor x = torch::randn({2, 4, 16, 24, 20});
  c10::InferenceMode guard;
  int ran = 0;
  for (const bool bf16 : {true, false}) {
    if (!onednn_unavailable(*net, bf16).empty()) continue;
    ++ran;
    const std::string precision = bf16 ? "bf16 " : "float32 ";
    const OneDnnStudent fast(*net, bf16);
    for (const std::string mode : {"none", "xy", "all"}) {
      const auto flips = mirror_sets(mode);
      expect_same(fast.predict_mirrored(x, flips), mirrored_by_hand(fast, x, flips), bf16,
                  precision + mode);
    }
    // The flips matter: the 4-flip mean is not the plain pass (a test that ignored them would
    // pass above only if both sides ignored them).
    EXPECT_GT((fast.predict_mirrored(x, mirror_sets("xy")) - torch::sigmoid(fast.forward(x)))
                  .abs()
                  .max()
                  .item<double>(),
              1e-3);

    // Padded inside: a 13×21×17 input on a 16×24×24 grid is the zero-padded input's result,
    // cropped.
    const at::Tensor small = x.slice(2, 0, 13).slice(3, 0, 21).slice(4, 0, 17).contiguous();
    const at::Tensor padded = at::constant_pad_nd(small, {0, 7, 0, 3, 0, 3});
    for (const std::string mode : {"none", "xy", "all"}) {
      const auto flips = mirror_sets(mode);
      const at::Tensor want =
          mirrored_by_hand(fast, padded, flips).slice(2, 0, 13).slice(3, 0, 21).slice(4, 0, 17);
      expect_same(fast.predict_mirrored(small, flips, {16, 24, 24}), want, bf16,
                  precision + mode + " padded");
    }
    EXPECT_THROW(fast.predict_mirrored(small, mirror_sets("xy"), {16, 20, 24}), Error)
        << "a grid smaller than the input";
    EXPECT_THROW(fast.predict_mirrored(small, mirror_sets("xy"), {16, 24, 22}), Error)
        << "a grid off the stride";
    EXPECT_THROW(fast.predict_mirrored(x, {{1}}), Error) << "the channel axis is not a flip";
  }
  if (ran == 0) GTEST_SKIP() << "no oneDNN path here: " << onednn_unavailable(*net, false);
}

TEST(OneDnnStudent, PredictChoosesItForAStudentOrUNetOnTheCpu) {
  Student student =
      make_student({{"widths", {16, 32}}, {"encoder_blocks", {1, 1}}, {"decoder_blocks", {1}}}, 8);
  SegNet unet = make_net("unet", {{"widths", {4, 8, 16, 32}}});
  SegNet cascade = make_net("cascade", {{"base_features", 2}});
  for (const bool bf16 : {true, false}) {
    InferenceOptions opt;
    opt.bf16 = bf16;
    const bool here = onednn_unavailable(*student, bf16).empty();
    // auto: the engine measured faster here (docs/engines.md): oneDNN, except the float32
    // student on an AVX2 CPU without AVX-512, where LibTorch was 1.08x faster.
    const bool avx2_fp32 = !bf16 && onednn_block(false) == 8;
    EXPECT_EQ(uses_onednn(*student, opt), here && !avx2_fp32) << "engine auto, bf16 " << bf16;
    const EngineChoice why = choose_engine(*student, opt);
    EXPECT_EQ(why.why.rfind("auto: ", 0), 0u) << why.why;
    if (here) EXPECT_NE(why.why.find("measured"), std::string::npos) << why.why;
    EXPECT_EQ(uses_onednn(*unet, opt), here) << "unet too";
    EXPECT_EQ(uses_onednn(*make_net("resunet", {{"widths", {8, 16}},
                                                {"encoder_blocks", {1, 1}},
                                                {"decoder_blocks", {1}},
                                                {"norm_groups", 4}}),
                          opt),
              here)
        << "resunet too";
    EXPECT_FALSE(uses_onednn(*cascade, opt));
    opt.engine = "torch";
    EXPECT_FALSE(uses_onednn(*student, opt));
    opt.engine = "onednn";
    EXPECT_THROW(uses_onednn(*cascade, opt), Error) << "not the cascade";
    if (here)
      EXPECT_TRUE(uses_onednn(*student, opt));
    else
      EXPECT_THROW(uses_onednn(*student, opt), Error) << "not here: said as an error";
    opt.engine = "fast";
    EXPECT_THROW(uses_onednn(*student, opt), Error) << "unknown engine name";
  }
  InferenceOptions gpu;
  gpu.device = "cuda";
  EXPECT_FALSE(uses_onednn(*student, gpu)) << "a CPU path";
}

}  // namespace
}  // namespace kdseg
