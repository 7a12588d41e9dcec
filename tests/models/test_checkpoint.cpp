// The checkpoint contract (DESIGN §2): save → load gives the same network, the version is
// checked, loading is strict, and Python's torch.load reads the file as a plain dict.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <sstream>

#include "kdseg/models/blocks.h"
#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::tiny_config;

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class CheckpointEveryArch : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointEveryArch, SaveThenLoadGivesIdenticalOutputs) {
  const std::string arch = GetParam();
  test::ScratchDir dir("ckpt_" + arch);
  torch::manual_seed(3);
  SegNet net = make_net(arch, tiny_config(arch));
  // Move the weights off their initial values so that a default-built net would differ.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.01 * torch::randn_like(p));
  }
  net->eval();
  const int64_t s = arch == "cascade" ? 32 : 16;
  at::Tensor x = torch::randn({1, 4, s, s, s});
  at::Tensor before = net->forward(x).logits;

  PreprocessPlan plan;
  plan.patch = {s, s, s};
  const std::string path = dir.str("net.pt");
  save_checkpoint(path, *net, plan);
  Checkpoint info;
  SegNet loaded = load_checkpoint(path, &info);
  EXPECT_FALSE(loaded->is_training());
  EXPECT_EQ(loaded->arch(), arch);
  EXPECT_EQ(info.arch, arch);
  EXPECT_EQ(info.version, kCheckpointVersion);
  EXPECT_EQ(info.model, net->options_json());
  EXPECT_EQ(info.plan.stride, net->stride());
  EXPECT_EQ(info.plan.patch, plan.patch);
  EXPECT_EQ(info.plan.channels, plan.channels);
  EXPECT_TRUE(torch::equal(loaded->forward(x).logits, before));
}

INSTANTIATE_TEST_SUITE_P(Models, CheckpointEveryArch, ::testing::ValuesIn(arch_names()),
                         [](const auto& info) { return test::arch_test_name(info.param); });

// A dict like save_checkpoint's, with fields to break.
c10::impl::GenericDict fake_checkpoint(int64_t version,
                                       const std::string& format = kCheckpointFormat) {
  SegNet net = make_net("student", tiny_config("student"));
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", format);
  dict.insert("version", version);
  dict.insert("arch", std::string("student"));
  dict.insert("config", nlohmann::json{{"model", net->options_json()}}.dump());
  dict.insert("state_dict", state_dict(*net));
  return dict;
}

TEST(Checkpoint, AnotherVersionIsRefusedNamingTheFile) {
  test::ScratchDir dir("ckpt_version");
  const std::string path = dir.str("future.pt");
  write_bytes(path, torch::pickle_save(c10::IValue(fake_checkpoint(kCheckpointVersion + 1))));
  try {
    load_checkpoint(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("version " + std::to_string(kCheckpointVersion + 1)), std::string::npos)
        << msg;
    EXPECT_NE(msg.find("reads version " + std::to_string(kCheckpointVersion)), std::string::npos)
        << msg;
  }
  // The same dict at the right version loads.
  write_bytes(path, torch::pickle_save(c10::IValue(fake_checkpoint(kCheckpointVersion))));
  EXPECT_NO_THROW(load_checkpoint(path));
}

TEST(Checkpoint, OtherFilesAreRefusedNamingTheFile) {
  test::ScratchDir dir("ckpt_other");
  const std::string garbage = dir.str("garbage.pt");
  write_bytes(garbage, {'n', 'o', 't', ' ', 'a', ' ', 'p', 'i', 'c', 'k', 'l', 'e'});
  try {
    read_checkpoint(garbage);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(garbage), std::string::npos) << e.what();
  }
  const std::string other = dir.str("other.pt");
  write_bytes(other, torch::pickle_save(c10::IValue(fake_checkpoint(1, "someone-else"))));
  EXPECT_THROW(read_checkpoint(other), Error);
  EXPECT_THROW(read_checkpoint(dir.str("missing.pt")), Error);
}

TEST(Checkpoint, LoadingIsStrict) {
  SegNet net = make_net("student", tiny_config("student"));
  StateDict state = state_dict(*net);
  SegNet target = make_net("student", tiny_config("student"));
  EXPECT_NO_THROW(load_state_dict(*target, state, "a.pt"));

  StateDict missing = state.copy();
  ASSERT_EQ(missing.erase("head.bias"), 1u);
  try {
    load_state_dict(*target, missing, "a.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing: head.bias"), std::string::npos) << e.what();
  }
  StateDict extra = state.copy();
  extra.insert("head.scale", torch::ones({1}));
  try {
    load_state_dict(*target, extra, "a.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected: head.scale"), std::string::npos) << e.what();
  }
  StateDict wrong = state.copy();
  wrong.insert_or_assign("head.bias", torch::zeros({4}));
  EXPECT_THROW(load_state_dict(*target, wrong, "a.pt"), Error);
}

TEST(Checkpoint, ExtraEntriesTravelAlong) {
  test::ScratchDir dir("ckpt_extra");
  SegNet net = make_net("student", tiny_config("student"));
  c10::impl::GenericDict extra(c10::StringType::get(), c10::AnyType::get());
  extra.insert("step", int64_t{42});
  extra.insert("rng", torch::arange(5));
  save_checkpoint(dir.str("last.pt"), *net, PreprocessPlan{}, extra);
  Checkpoint ckpt = read_checkpoint(dir.str("last.pt"));
  ASSERT_TRUE(ckpt.extra.contains("step"));
  EXPECT_EQ(ckpt.extra.at("step").toInt(), 42);
  EXPECT_TRUE(torch::equal(ckpt.extra.at("rng").toTensor(), torch::arange(5)));

  c10::impl::GenericDict clash(c10::StringType::get(), c10::AnyType::get());
  clash.insert("arch", std::string("unet"));
  EXPECT_THROW(save_checkpoint(dir.str("bad.pt"), *net, PreprocessPlan{}, clash), Error);
}

TEST(Checkpoint, PlansRoundTripStrictly) {
  PreprocessPlan cascade = paper_plan("cascade");
  EXPECT_EQ(cascade.fixed_shape, (std::array<int64_t, 3>{128, 128, 128}));
  EXPECT_EQ(paper_plan("student").patch, (std::array<int64_t, 3>{144, 144, 128}));
  nlohmann::json j = cascade;
  EXPECT_EQ(j.get<PreprocessPlan>().fixed_shape, cascade.fixed_shape);
  j["spacingg"] = {1, 1, 1};
  EXPECT_THROW(j.get<PreprocessPlan>(), Error);
}

TEST(Checkpoint, PythonTorchLoadReadsAPlainDict) {
  const std::string python = KDSEG_SYSTEM_PYTHON;
  if (test::run_command(python + " -c 'import torch'").exit_code != 0)
    GTEST_SKIP() << python << " cannot import torch (Debian's python3-torch)";
  test::ScratchDir dir("ckpt_python");
  SegNet net = make_net("resunet-vae", tiny_config("resunet-vae"));
  const std::string path = dir.str("net.pt");
  save_checkpoint(path, *net, PreprocessPlan{});
  const std::string script = dir.str("read.py");
  std::ofstream(script) << R"(import json, sys, torch
d = torch.load(sys.argv[1])
assert type(d) is dict, type(d)
assert sorted(d) == ['arch', 'config', 'format', 'state_dict', 'version'], sorted(d)
assert d['format'] == 'kdseg-checkpoint' and d['arch'] == 'resunet-vae'
assert isinstance(d['version'], int)
cfg = json.loads(d['config'])
assert 'model' in cfg and 'plan' in cfg
sd = d['state_dict']
assert isinstance(sd, dict)
for name in sorted(sd):
    t = sd[name]
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    print(name, 'x'.join(str(s) for s in t.shape))
)";
  test::RunResult r = test::run_command(python + " " + script + " " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, std::string> expected;
  for (const auto& item : net->named_parameters())
    expected[item.key()] = shape_string(item.value().sizes().vec());
  std::ostringstream want;
  for (const auto& [name, shape] : expected) want << name << " " << shape << "\n";
  EXPECT_EQ(r.output, want.str());
}

}  // namespace
}  // namespace kdseg
