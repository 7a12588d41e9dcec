// The Python package (python/kdseg) against the C++ networks: for every architecture a tiny,
// seeded network is saved with save_checkpoint, run in eval mode on a fixed random input, and
// tests/python/parity.py loads the checkpoint with kdseg.load, runs the same input and fails
// unless max|Δlogits| <= 1e-4 · max|logits|. Skipped where Debian's Python cannot import torch.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>

#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

class PythonParity : public ::testing::TestWithParam<std::string> {};

TEST_P(PythonParity, SameLogitsAsCpp) {
  const std::string python = KDSEG_SYSTEM_PYTHON;
  if (test::run_command(python + " -c 'import torch'").exit_code != 0)
    GTEST_SKIP() << python << " cannot import torch (Debian's python3-torch): no parity check";
  const std::string arch = GetParam();
  test::ScratchDir dir("python_parity_" + test::arch_test_name(arch));

  torch::manual_seed(7);
  SegNet net = make_net(arch, test::tiny_config(arch));
  // Move every weight off its initial value (norms start at weight 1, bias 0).
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.1 * torch::randn_like(p));
  }
  net->eval();
  // 32³: a multiple of every tiny stride (the cascade's is 32, where its coarsest net's bottleneck
  // is one voxel, whose norm Python's F.group_norm would refuse).
  const int64_t s = 32;
  const at::Tensor x = torch::randn({1, 4, s, s, s});
  at::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = net->forward(x).logits;
  }
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{1, 3, s, s, s}));

  const std::string checkpoint = dir.str("net.pt"), io = dir.str("io.pt");
  save_checkpoint(checkpoint, *net, PreprocessPlan{});
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("input", x);
  dict.insert("logits", logits.contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(io, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));

  const std::string source = KDSEG_SOURCE_DIR;
  const test::RunResult r =
      test::run_command("PYTHONPATH=" + source + "/python " + python + " " + source +
                        "/tests/python/parity.py " + checkpoint + " " + io + " --arch " + arch);
  std::cout << r.output;
  EXPECT_EQ(r.exit_code, 0) << "parity.py failed; its output is above";
}

INSTANTIATE_TEST_SUITE_P(Models, PythonParity, ::testing::ValuesIn(arch_names()),
                         [](const auto& info) { return test::arch_test_name(info.param); });

}  // namespace
}  // namespace kdseg
