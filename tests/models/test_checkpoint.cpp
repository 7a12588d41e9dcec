// The checkpoint contract (docs/design.md §2): save → load gives the same network, the version is
// checked (version 1, without a digest, still loads with a warning), loading is strict, extra
// entries of every kind travel along, and Python's torch.load reads the file as a plain dict.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <cmath>
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

// The file of `dict` with its digest, as save_checkpoint writes it.
void write_checkpoint(const std::string& path, const c10::impl::GenericDict& dict) {
  const std::vector<uint8_t> bytes = checkpoint_file_bytes(dict, path);
  write_bytes(path, std::vector<char>(bytes.begin(), bytes.end()));
}

TEST(Checkpoint, AnotherVersionIsRefusedNamingTheFile) {
  test::ScratchDir dir("ckpt_version");
  const std::string path = dir.str("future.pt");
  write_checkpoint(path, fake_checkpoint(kCheckpointVersion + 1));
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
  write_checkpoint(path, fake_checkpoint(kCheckpointVersion));
  EXPECT_NO_THROW(load_checkpoint(path));
}

TEST(Checkpoint, VersionOneWithoutADigestLoadsWithAWarning) {
  test::ScratchDir dir("ckpt_v1");
  const std::string path = dir.str("old.pt");
  write_bytes(path, torch::pickle_save(c10::IValue(fake_checkpoint(1))));  // as kdseg 0.1 wrote
  testing::internal::CaptureStderr();
  Checkpoint info;
  EXPECT_NO_THROW(load_checkpoint(path, &info));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(info.version, 1);
  EXPECT_EQ(info.digest, "");
  EXPECT_NE(err.find("warning: " + path), std::string::npos) << err;
  EXPECT_NE(err.find("no digest"), std::string::npos) << err;
}

TEST(Checkpoint, VersionTwoWithoutItsDigestIsRefused) {
  test::ScratchDir dir("ckpt_nodigest");
  const std::string path = dir.str("nodigest.pt");
  write_bytes(path, torch::pickle_save(c10::IValue(fake_checkpoint(kCheckpointVersion))));
  try {
    read_checkpoint(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("digest"), std::string::npos) << msg;
  }
}

// A file whose zip is intact but whose content is not what its digest says: the digest is the
// one check that sees it.
TEST(Checkpoint, ContentThatDoesNotMatchItsDigestIsRefused) {
  test::ScratchDir dir("ckpt_digest");
  c10::impl::GenericDict dict = fake_checkpoint(kCheckpointVersion);
  const std::string good = dir.str("good.pt");
  write_checkpoint(good, dict);
  const Checkpoint ok = read_checkpoint(good);
  ASSERT_EQ(ok.digest.size(), 7u + 64u);
  EXPECT_EQ(ok.digest.substr(0, 7), "sha256:");
  // The same digest over weights changed by one ulp in one element.
  StateDict state =
      c10::impl::toTypedDict<std::string, at::Tensor>(dict.at("state_dict").toGenericDict()).copy();
  at::Tensor w = state.at("head.weight").clone();
  w.view(-1)[0] = std::nextafter(w.view(-1)[0].item<float>(), 1e9f);
  state.insert_or_assign("head.weight", w);
  dict.insert_or_assign("state_dict", state);
  dict.insert("digest", ok.digest);
  const std::string bad = dir.str("bad.pt");
  write_bytes(bad, torch::pickle_save(c10::IValue(dict)));
  try {
    read_checkpoint(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_NE(msg.find("does not match its digest"), std::string::npos) << msg;
    EXPECT_NE(msg.find(ok.digest), std::string::npos) << msg;
  }
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

  for (const char* reserved : {"arch", "digest"}) {
    c10::impl::GenericDict clash(c10::StringType::get(), c10::AnyType::get());
    clash.insert(reserved, std::string("unet"));
    EXPECT_THROW(save_checkpoint(dir.str("bad.pt"), *net, PreprocessPlan{}, clash), Error);
  }
}

// Every kind of value kdseg's reader knows comes back with its value and its TorchScript type
// (the trainer's toTypedDict<std::string, at::Tensor> on "optimizer" needs the type).
TEST(Checkpoint, ExtrasOfEveryKindComeBackWithTheirTypes) {
  test::ScratchDir dir("ckpt_kinds");
  SegNet net = make_net("student", tiny_config("student"));
  c10::impl::GenericDict extra(c10::StringType::get(), c10::AnyType::get());
  c10::impl::GenericDict optimizer(c10::StringType::get(), c10::TensorType::get());
  optimizer.insert("head.weight.exp_avg", torch::randn({3, 8}, torch::kDouble));
  extra.insert("optimizer", optimizer);
  extra.insert("none", c10::IValue());
  extra.insert("flag", true);
  extra.insert("big", int64_t{1} << 40);
  extra.insert("negative", int64_t{-3});
  extra.insert("real", 0.1);
  extra.insert("text", std::string("héllo\n"));
  extra.insert("bf16", torch::randn({2, 3}).to(torch::kBFloat16));
  extra.insert("half", torch::randn({4}).to(torch::kHalf));
  extra.insert("mask", torch::tensor({true, false, true}));
  extra.insert("bytes", torch::arange(7, torch::kByte));
  extra.insert("view", torch::arange(20, torch::kInt).reshape({4, 5}).slice(1, 1, 4).t());
  extra.insert("scalar", torch::tensor(2.5));
  extra.insert("ints", c10::List<int64_t>({1, 2, 3}));
  extra.insert("reals", c10::List<double>({0.5, -1}));
  extra.insert("bools", c10::List<bool>({true}));
  extra.insert("tensors", c10::List<at::Tensor>({torch::ones({2}), torch::zeros({1})}));
  extra.insert("pair", c10::ivalue::Tuple::create({c10::IValue(int64_t{1}), c10::IValue("x")}));
  c10::Dict<std::string, int64_t> counts;
  counts.insert("a", 1);
  c10::Dict<std::string, c10::Dict<std::string, int64_t>> nested;
  nested.insert("outer", counts);
  extra.insert("nested", nested);
  const std::string path = dir.str("kinds.pt");
  save_checkpoint(path, *net, PreprocessPlan{}, extra);
  const Checkpoint ckpt = read_checkpoint(path);
  ASSERT_EQ(ckpt.extra.size(), extra.size());
  for (const auto& e : extra) {
    const std::string key = e.key().toStringRef();
    const c10::IValue& back = ckpt.extra.at(key);
    EXPECT_EQ(*back.type(), *e.value().type()) << key << ": " << back.type()->annotation_str()
                                               << " vs " << e.value().type()->annotation_str();
    if (e.value().isTensor()) {
      EXPECT_EQ(back.toTensor().scalar_type(), e.value().toTensor().scalar_type()) << key;
      EXPECT_TRUE(torch::equal(back.toTensor(), e.value().toTensor())) << key;
    } else if (!e.value().isGenericDict() && !e.value().isList()) {
      EXPECT_EQ(back, e.value()) << key;
    }
  }
  auto typed =
      c10::impl::toTypedDict<std::string, at::Tensor>(ckpt.extra.at("optimizer").toGenericDict());
  EXPECT_TRUE(torch::equal(typed.at("head.weight.exp_avg"),
                           optimizer.at("head.weight.exp_avg").toTensor()));
  EXPECT_EQ(ckpt.extra.at("ints").toIntVector(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(ckpt.extra.at("tensors").toTensorVector().size(), 2u);
  EXPECT_EQ(ckpt.extra.at("nested").toGenericDict().at("outer").toGenericDict().at("a").toInt(), 1);

  // A value the reader does not know (a TorchScript object, an enum, ...) is refused when saving,
  // not discovered when loading.
  c10::impl::GenericDict odd(c10::StringType::get(), c10::AnyType::get());
  odd.insert("device", c10::Device("cpu"));
  EXPECT_THROW(save_checkpoint(dir.str("odd.pt"), *net, PreprocessPlan{}, odd), Error);
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
assert sorted(d) == ['arch', 'config', 'digest', 'format', 'state_dict', 'version'], sorted(d)
assert d['digest'].startswith('sha256:') and len(d['digest']) == 71
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
