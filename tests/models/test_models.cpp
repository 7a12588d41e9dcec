// The five networks on tiny CPU configurations: output shapes, input-size errors, gradients to
// every parameter, seeded determinism; the paper-size parameter counts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kdseg/models/cascade.h"
#include "kdseg/models/net.h"
#include "kdseg/models/registry.h"
#include "kdseg/models/resunet.h"
#include "kdseg/models/student.h"
#include "kdseg/runtime/autocast.h"
#include "kdseg/train/loss.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"

namespace kdseg {
namespace {

using test::tiny_config;
using test::valid_sizes;

at::Tensor input_of(const std::array<int64_t, 3>& s, int64_t batch = 1) {
  return torch::randn({batch, 4, s[0], s[1], s[2]});
}

class EveryArch : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { torch::manual_seed(1234); }
};

TEST_P(EveryArch, OutputShapesFollowTheInput) {
  const std::string arch = GetParam();
  SegNet net = make_net(arch, tiny_config(arch));
  EXPECT_EQ(net->arch(), arch);
  net->train();
  for (const auto& s : valid_sizes(arch)) {
    SCOPED_TRACE(shape_string({s[0], s[1], s[2]}));
    SegOutput out = net->forward(input_of(s, 2));
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 3, s[0], s[1], s[2]}));
    if (arch == "cascade") {
      ASSERT_EQ(out.deep.size(), 2u);  // coarsest first
      EXPECT_EQ(out.deep[0].sizes(), (std::vector<int64_t>{2, 3, s[0] / 4, s[1] / 4, s[2] / 4}));
      EXPECT_EQ(out.deep[1].sizes(), (std::vector<int64_t>{2, 3, s[0] / 2, s[1] / 2, s[2] / 2}));
    } else {
      EXPECT_TRUE(out.deep.empty());
    }
    if (arch == "resunet-vae") {
      ASSERT_TRUE(out.recon.defined());
      EXPECT_EQ(out.recon.sizes(), (std::vector<int64_t>{2, 4, s[0], s[1], s[2]}));
      EXPECT_EQ(out.mu.sizes(), (std::vector<int64_t>{2, 8}));
      EXPECT_EQ(out.logvar.sizes(), (std::vector<int64_t>{2, 8}));
    } else {
      EXPECT_FALSE(out.recon.defined());
    }
  }
}

TEST_P(EveryArch, SizesThatAreNotMultiplesOfTheStrideAreRefused) {
  const std::string arch = GetParam();
  SegNet net = make_net(arch, tiny_config(arch));
  net->eval();
  const int64_t s = net->stride();
  try {
    net->forward(torch::randn({1, 4, s, s + 1, s}));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(arch), std::string::npos) << msg;
    EXPECT_NE(msg.find(shape_string({s, s + 1, s})), std::string::npos) << msg;
    EXPECT_NE(msg.find("multiple of the network's total stride " + std::to_string(s)),
              std::string::npos)
        << msg;
  }
  EXPECT_THROW(net->forward(torch::randn({1, 3, s, s, s})), Error);  // 3 channels
  EXPECT_THROW(net->forward(torch::randn({4, s, s, s})), Error);     // no batch axis
}

TEST_P(EveryArch, GradientsReachEveryParameter) {
  const std::string arch = GetParam();
  SegNet net = make_net(arch, tiny_config(arch));
  net->train();
  const auto s = valid_sizes(arch).front();
  at::Tensor x = input_of(s, 2);
  at::Tensor target = (torch::rand({2, 3, s[0], s[1], s[2]}) > 0.7).to(torch::kFloat);
  LossTerms loss = segmentation_loss(net->forward(x), target, x);
  loss.total.backward();
  int64_t n_checked = 0;
  for (const auto& p : net->named_parameters()) {
    SCOPED_TRACE(p.key());
    ASSERT_TRUE(p.value().grad().defined());
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>());
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0);
    ++n_checked;
  }
  EXPECT_GT(n_checked, 10);
}

TEST_P(EveryArch, SeededForwardIsDeterministic) {
  const std::string arch = GetParam();
  const auto s = valid_sizes(arch).front();
  auto run = [&] {
    torch::manual_seed(7);
    SegNet net = make_net(arch, tiny_config(arch));
    net->train();  // the VAE samples its latent in training mode: seeded too
    at::Tensor x = input_of(s);
    return net->forward(x);
  };
  SegOutput a = run(), b = run();
  EXPECT_TRUE(torch::equal(a.logits, b.logits));
  if (a.recon.defined()) {
    EXPECT_TRUE(torch::equal(a.recon, b.recon));
  }
}

TEST_P(EveryArch, OptionsRoundTripThroughJson) {
  const std::string arch = GetParam();
  SegNet net = make_net(arch, tiny_config(arch));
  SegNet again = make_net(arch, net->options_json());
  EXPECT_EQ(again->options_json(), net->options_json());
  EXPECT_EQ(count_parameters(*again), count_parameters(*net));
}

// On a CUDA device (skipped without one): the same weights and input give the CPU's logits and
// gradients (TF32 off, so the arithmetic is fp32 on both), and bf16 autocast on CUDA stays close.
TEST_P(EveryArch, CudaGivesTheCpuLogitsAndGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::string arch = GetParam();
  const bool tf32 = at::globalContext().allowTF32CuDNN();
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  const auto s = valid_sizes(arch).front();
  torch::manual_seed(11);
  SegNet cpu = make_net(arch, tiny_config(arch));
  torch::manual_seed(11);
  SegNet gpu = make_net(arch, tiny_config(arch));
  gpu->to(torch::kCUDA);
  cpu->eval();  // eval: no sampled VAE latent, so both devices compute the same function
  gpu->eval();
  const at::Tensor x = input_of(s, 2);
  const at::Tensor target = (torch::rand({2, 3, s[0], s[1], s[2]}) > 0.7).to(torch::kFloat);
  SegOutput a = cpu->forward(x);
  SegOutput b = gpu->forward(x.to(torch::kCUDA));
  ASSERT_TRUE(b.logits.is_cuda());
  // Differences relative to the tensor's largest magnitude (fp32 sums in another order).
  auto rel = [](const at::Tensor& ref, const at::Tensor& other) {
    return (ref - other.cpu()).abs().max().item<double>() /
           std::max(ref.abs().max().item<double>(), 1e-12);
  };
  EXPECT_LT(rel(a.logits, b.logits), 1e-4);
  segmentation_loss(a, target, x).total.backward();
  segmentation_loss(b, target.to(torch::kCUDA), x.to(torch::kCUDA)).total.backward();
  const auto pa = cpu->named_parameters(), pb = gpu->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  int64_t compared = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    SCOPED_TRACE(pa[i].key());
    // Parameters an eval-mode forward does not use (the VAE branch) have no gradient on either.
    ASSERT_EQ(pb[i].value().grad().defined(), pa[i].value().grad().defined());
    if (!pa[i].value().grad().defined()) continue;
    // A norm's weight gradient sums over every voxel with cancellation: 1e-2 of its largest
    // entry allows for the summation order (measured: up to 3.2e-3, cascade on an H200);
    // a wrong kernel is off by O(1).
    EXPECT_LT(rel(pa[i].value().grad(), pb[i].value().grad()), 1e-2);
    ++compared;
  }
  EXPECT_GT(compared, 10);
  {
    torch::NoGradGuard no_grad;
    AutocastGuard bf16(true, "cuda");
    const at::Tensor c = gpu->forward(x.to(torch::kCUDA)).logits;
    EXPECT_EQ(c.sizes(), a.logits.sizes());
    EXPECT_LT(rel(a.logits, c.to(torch::kFloat)), 5e-2) << "bf16 autocast on CUDA";
  }
  at::globalContext().setAllowTF32CuDNN(tf32);
}

INSTANTIATE_TEST_SUITE_P(Models, EveryArch, ::testing::ValuesIn(arch_names()),
                         [](const auto& info) { return test::arch_test_name(info.param); });

// ---------------------------------------------------------------- paper sizes

TEST(Models, StudentHasThePublishedParameterCount) {
  // Widths [16,32,64,128], encoder [1,2,2,4], decoder [1,1,1]; convs bias-free but the head,
  // affine GroupNorm. By hand: residual block of width c = 2·27c² + 2·2c.
  auto block = [](int64_t c) { return 54 * c * c + 4 * c; };
  const int64_t expected = 4 * 16 * 27 + 2 * 16                    // input conv + GN
                           + block(16)                             // level 0
                           + 16 * 32 * 8 + 2 * block(32)           // level 1
                           + 32 * 64 * 8 + 2 * block(64)           // level 2
                           + 64 * 128 * 8 + 4 * block(128)         // level 3
                           + (32 * 16 + 2 * 16 * 16 + block(16))   // decoder 0
                           + (64 * 32 + 2 * 32 * 32 + block(32))   // decoder 1
                           + (128 * 64 + 2 * 64 * 64 + block(64))  // decoder 2
                           + 16 * 3 * 27 + 3;                      // head
  EXPECT_EQ(expected, 4509939);
  EXPECT_EQ(count_parameters(*make_net("student")), 4509939);  // "about 4.51 M"
}

TEST(Models, ResUNetCountMatchesItsDescription) {
  // Pre-activation blocks have the same count as the student's; stride-2 downsampling is 3³.
  auto block = [](int64_t c) { return 54 * c * c + 4 * c; };
  const int64_t expected = 4 * 16 * 27 + block(16) + 16 * 32 * 27 + 2 * block(32) + 32 * 64 * 27 +
                           2 * block(64) + 64 * 128 * 27 + 4 * block(128) + (32 * 16 + block(16)) +
                           (64 * 32 + block(32)) + (128 * 64 + block(64)) + (2 * 16 + 16 * 3 + 3);
  EXPECT_EQ(count_parameters(*make_net("resunet")), expected);
}

TEST(Models, RegistryListsEveryArchitectureWithItsPaperSize) {
  std::vector<ArchInfo> archs = list_architectures();
  ASSERT_EQ(archs.size(), 5u);
  EXPECT_EQ(archs[4].name, "student");
  EXPECT_EQ(archs[4].n_parameters, 4509939);
  EXPECT_EQ(archs[4].stride, 8);
  EXPECT_EQ(format_millions(archs[4].n_parameters), "4.51 M");
  for (const auto& a : archs) {
    EXPECT_GT(a.n_parameters, 0) << a.name;
    EXPECT_FALSE(a.description.empty()) << a.name;
  }
  const std::string table = format_architectures(archs);
  EXPECT_NE(table.find("student"), std::string::npos);
  EXPECT_NE(table.find("4.51 M"), std::string::npos);
  EXPECT_EQ(archs[3].name, "cascade");
  EXPECT_EQ(archs[3].stride, 32);
  EXPECT_EQ(archs[0].stride, 16);
}

TEST(Models, UnknownNamesAndOptionsAreErrorsThatListWhatIsKnown) {
  try {
    make_net("vnet");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resunet-vae"), std::string::npos) << e.what();
  }
  try {
    make_net("student", {{"widthz", {8, 16}}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("widthz"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("widths"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_net("student",
                        {{"widths", {6, 12}}, {"encoder_blocks", {1, 1}}, {"decoder_blocks", {1}}}),
               Error);  // 6 channels, GroupNorm(8)
  EXPECT_THROW(make_net("cascade", {{"n_scales", 3}, {"depth", 2}}), Error);
}

TEST(Models, VaeNeedsItsFixedSizeInTrainingOnly) {
  SegNet net = make_net("resunet-vae", tiny_config("resunet-vae"));
  net->train();
  try {
    net->forward(torch::randn({1, 4, 32, 16, 16}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16x16x16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("32x16x16"), std::string::npos) << e.what();
  }
  net->eval();
  SegOutput out = net->forward(torch::randn({1, 4, 32, 16, 8}));  // a plain resunet in eval
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{1, 3, 32, 16, 8}));
  EXPECT_FALSE(out.recon.defined());
  EXPECT_THROW(make_net("resunet-vae", {{"vae_input_shape", {24, 24, 24}}}), Error);
}

TEST(Models, StudentUpsamplingOrderIsTheReleasedOne) {
  // The released student upsamples then applies the 1×1 conv; kdseg convolves first. Same map.
  UpConv up(8, 4, false);
  at::Tensor x = torch::randn({1, 8, 3, 4, 5});
  at::Tensor released = up->conv(upsample2x(x));
  EXPECT_TRUE(torch::allclose(up(x), released, 1e-5, 1e-6));
}

}  // namespace
}  // namespace kdseg
