// `python -m kdseg export` (python/kdseg/export.py) against the C++ networks: for every
// architecture a tiny, seeded network is saved with save_checkpoint and run in eval mode on a
// fixed random 1×4×32³ input; then
//   TorchScriptExport  the traced file gives the C++ logits in Python (torch.jit.load) and in C++
//                      (torch::jit::load, here), within 1e-4 · max|logits|, and carries the plan
//                      as the extra file kdseg_plan.json;
//   OnnxExport         the ONNX file passes onnx.checker, has symbolic B/D/H/W axes and carries
//                      the plan as metadata kdseg_plan;
//   OnnxRuntime        ONNX Runtime (onnxruntime-node, scripts/onnx_deps.sh) runs the file to the
//                      C++ logits within 1e-3 · max|logits|.
// Skipped, with the reason, where Debian's Python lacks torch or onnx, or node or
// third_party/onnxruntime-node is missing.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

const std::string kPython = KDSEG_SYSTEM_PYTHON;
const std::string kSource = KDSEG_SOURCE_DIR;

// A tiny seeded network of `arch` saved as dir/net.pt, its input x (1,4,32,32,32) and eval-mode
// logits, and both saved as dir/io.pt for tests/python/export_check.py.
struct Fixture {
  SegNet net;
  at::Tensor x, logits;
  std::string checkpoint, io;
};

Fixture make_fixture(const std::string& arch, const test::ScratchDir& dir) {
  torch::manual_seed(7);
  Fixture f{make_net(arch, test::tiny_config(arch)), {}, {}, dir.str("net.pt"), dir.str("io.pt")};
  {
    torch::NoGradGuard no_grad;
    for (auto& p : f.net->parameters()) p.add_(0.1 * torch::randn_like(p));  // off 1 / 0
  }
  f.net->eval();
  const int64_t s = 32;  // a multiple of every tiny stride (the cascade's is 32)
  f.x = torch::randn({1, 4, s, s, s});
  {
    torch::NoGradGuard no_grad;
    f.logits = f.net->forward(f.x).logits.contiguous();
  }
  save_checkpoint(f.checkpoint, *f.net, PreprocessPlan{});
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("input", f.x);
  dict.insert("logits", f.logits);
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  std::ofstream(f.io, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return f;
}

std::string python_command(const std::string& args) {
  return "PYTHONPATH=" + kSource + "/python " + kPython + " " + args;
}

// Runs `python -m kdseg export` and then export_check.py on its file; returns false (after
// recording the failure) if either fails.
bool export_and_check(const Fixture& f, const std::string& arch, const std::string& format,
                      const std::string& out) {
  const test::RunResult e = test::run_command(python_command(
      "-m kdseg export --model " + f.checkpoint + " --format " + format + " --out " + out));
  std::cout << e.output;
  EXPECT_EQ(e.exit_code, 0) << "python -m kdseg export failed; its output is above";
  if (e.exit_code != 0) return false;
  const test::RunResult c =
      test::run_command(python_command(kSource + "/tests/python/export_check.py " + out + " " +
                                       f.io + " --format " + format + " --arch " + arch));
  std::cout << c.output;
  EXPECT_EQ(c.exit_code, 0) << "export_check.py failed; its output is above";
  return c.exit_code == 0;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

class TorchScriptExport : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchScriptExport, SameLogitsInPythonAndCpp) {
  if (test::run_command(kPython + " -c 'import torch'").exit_code != 0)
    GTEST_SKIP() << kPython << " cannot import torch (Debian's python3-torch): no export";
  const std::string arch = GetParam();
  test::ScratchDir dir("python_export_ts_" + test::arch_test_name(arch));
  const Fixture f = make_fixture(arch, dir);
  const std::string out = dir.str("net.ts");
  if (!export_and_check(f, arch, "torchscript", out)) return;

  torch::jit::ExtraFilesMap extra{{"kdseg_plan.json", ""}};
  torch::jit::Module module = torch::jit::load(out, torch::kCPU, extra);
  module.eval();
  at::Tensor got;
  {
    torch::NoGradGuard no_grad;
    got = module.forward({f.x}).toTensor();
  }
  ASSERT_EQ(got.sizes(), f.logits.sizes());
  const double diff = max_diff(got, f.logits), scale = f.logits.abs().max().item<double>();
  std::cout << arch << " torchscript (torch::jit::load): max|dlogits| = " << diff
            << ", max|logits| = " << scale << "\n";
  EXPECT_LE(diff, 1e-4 * scale);

  ASSERT_FALSE(extra["kdseg_plan.json"].empty()) << out << ": no extra file kdseg_plan.json";
  const nlohmann::json meta = nlohmann::json::parse(extra["kdseg_plan.json"]);
  EXPECT_EQ(meta.at("arch"), arch);
  EXPECT_EQ(meta.at("plan").at("stride"), f.net->stride());
  // Every C++ option, as Python resolved it (Python's resunet also lists the VAE options).
  const nlohmann::json options = f.net->options_json();
  for (auto it = options.begin(); it != options.end(); ++it)
    EXPECT_EQ(meta.at("model").at(it.key()), it.value()) << it.key();
  EXPECT_EQ(meta.at("output").at("regions"), (nlohmann::json{"WT", "TC", "ET"}));
}

class OnnxExport : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxExport, CheckedWithPlan) {
  if (test::run_command(kPython + " -c 'import torch, onnx'").exit_code != 0)
    GTEST_SKIP() << kPython << " cannot import torch and onnx (Debian's python3-torch, "
                 << "python3-onnx): no ONNX export";
  const std::string arch = GetParam();
  test::ScratchDir dir("python_export_onnx_" + test::arch_test_name(arch));
  const Fixture f = make_fixture(arch, dir);
  export_and_check(f, arch, "onnx", dir.str("net.onnx"));
}

class OnnxRuntime : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxRuntime, SameLogitsAsCpp) {
  const std::string modules = kSource + "/third_party/onnxruntime-node/node_modules";
  if (test::run_command(kPython + " -c 'import torch, onnx'").exit_code != 0)
    GTEST_SKIP() << kPython << " cannot import torch and onnx: no ONNX export";
  if (test::run_command("NODE_PATH=" + modules + " node -e \"require('onnxruntime-node')\"")
          .exit_code != 0)
    GTEST_SKIP() << "node cannot load onnxruntime-node from " << modules
                 << " (bash scripts/onnx_deps.sh installs it): the ONNX file is not run";
  const std::string arch = GetParam();
  test::ScratchDir dir("python_export_ort_" + test::arch_test_name(arch));
  const Fixture f = make_fixture(arch, dir);
  const std::string model = dir.str("net.onnx"), in = dir.str("in.f32"), out = dir.str("out.f32");
  if (!export_and_check(f, arch, "onnx", model)) return;

  std::ofstream(in, std::ios::binary)
      .write(static_cast<const char*>(f.x.data_ptr()),
             static_cast<std::streamsize>(f.x.numel() * sizeof(float)));
  const test::RunResult r =
      test::run_command("NODE_PATH=" + modules + " node " + kSource + "/tests/node/onnx_run.js " +
                        model + " " + in + " " + out + " 1x4x32x32x32");
  std::cout << r.output;
  ASSERT_EQ(r.exit_code, 0) << "onnx_run.js failed; its output is above";
  at::Tensor got = torch::empty_like(f.logits);
  std::ifstream file(out, std::ios::binary);
  file.read(static_cast<char*>(got.data_ptr()),
            static_cast<std::streamsize>(got.numel() * sizeof(float)));
  ASSERT_EQ(file.gcount(), static_cast<std::streamsize>(got.numel() * sizeof(float)))
      << out << ": short logits file";
  const double diff = max_diff(got, f.logits), scale = f.logits.abs().max().item<double>();
  std::cout << arch << " onnx (onnxruntime-node): max|dlogits| = " << diff
            << ", max|logits| = " << scale << "\n";
  EXPECT_LE(diff, 1e-3 * scale);
}

const auto kArchs = ::testing::ValuesIn(arch_names());
const auto kName = [](const auto& info) { return test::arch_test_name(info.param); };
INSTANTIATE_TEST_SUITE_P(Models, TorchScriptExport, kArchs, kName);
INSTANTIATE_TEST_SUITE_P(Models, OnnxExport, kArchs, kName);
INSTANTIATE_TEST_SUITE_P(Models, OnnxRuntime, kArchs, kName);

}  // namespace
}  // namespace kdseg
