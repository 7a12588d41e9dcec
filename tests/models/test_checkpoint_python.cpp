// The Python side of the checkpoint (python/kdseg/checkpoint_file.py, issue 30):
//   PayloadRunsNowhere      the issue's file (torch.save of a dict whose "x" calls os.system when
//                           unpickled) given to kdseg.load, `python -m kdseg export` and
//                           `kdseg export`: each exits non-zero naming the file and the refused
//                           global, and the command never ran — while torch.load of the same file
//                           does run it (the payload is live).
//   DigestAgreesWithCpp     Python recomputes the C++ writer's digest over every kind of entry
//                           and reads the same values as torch.load.
//   DamageIsRefused         a digest mismatch (intact zip), a flipped bit and a truncation are
//                           refused naming the file; version 1 loads with a warning.
// Skipped, with the reason, where Debian's Python lacks torch.
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "kdseg/io/gzip.h"
#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

const std::string kPython = KDSEG_SYSTEM_PYTHON;
const std::string kSource = KDSEG_SOURCE_DIR;

std::string python(const std::string& args) {
  return "PYTHONPATH=" + kSource + "/python " + kPython + " " + args + " 2>&1";
}

bool have_torch() {
  return test::run_command(kPython + " -c 'import torch'").exit_code == 0;
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(CheckpointPython, PayloadRunsNowhere) {
  if (!have_torch()) GTEST_SKIP() << kPython << " cannot import torch (Debian's python3-torch)";
  test::ScratchDir dir("ckpt_payload");
  const std::string payload = dir.str("downloaded.pt"), ran = dir.str("PAYLOAD_RAN");
  std::ofstream(dir.str("make.py")) << "import os, sys, torch\n"
                                       "class P:\n"
                                       "    def __reduce__(self):\n"
                                       "        return (os.system, ('touch ' + sys.argv[2],))\n"
                                       "torch.save({'format': 'kdseg-checkpoint', 'version': 1, "
                                       "'x': P()}, sys.argv[1])\n";
  ASSERT_EQ(
      test::run_command(kPython + " " + dir.str("make.py") + " " + payload + " " + ran).exit_code,
      0);
  ASSERT_FALSE(std::filesystem::exists(ran));

  struct Way {
    const char* name;
    std::string command;
  };
  const std::vector<Way> ways{
      {"kdseg.load", python("-c 'import sys, kdseg; kdseg.load(sys.argv[1])' " + payload)},
      {"python -m kdseg export", python("-m kdseg export --model " + payload +
                                        " --format torchscript --out " + dir.str("a.ts"))},
      {"kdseg export", std::string("KDSEG_PYTHONPATH=") + kSource + "/python " + KDSEG_BINARY +
                           " export --model " + payload + " --format onnx --out " +
                           dir.str("b.onnx") + " 2>&1"}};
  for (const Way& w : ways) {
    const test::RunResult r = test::run_command(w.command);
    EXPECT_NE(r.exit_code, 0) << w.name << ":\n" << r.output;
    EXPECT_NE(r.output.find(payload), std::string::npos) << w.name << ":\n" << r.output;
    EXPECT_NE(r.output.find("refused: the file asks to call posix.system"), std::string::npos)
        << w.name << ":\n"
        << r.output;
    if (std::string(w.name) != "kdseg.load") {  // a library call raises; the commands just say it
      EXPECT_EQ(r.output.find("Traceback"), std::string::npos) << w.name << ":\n" << r.output;
    }
    EXPECT_FALSE(std::filesystem::exists(ran)) << w.name << " ran the payload";
    std::cout << w.name << ": exit " << r.exit_code << ": " << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.str("a.ts")));
  EXPECT_FALSE(std::filesystem::exists(dir.str("b.onnx")));
  // The control: the file is live — plain torch.load runs it.
  test::run_command(kPython + " -c 'import sys, torch; torch.load(sys.argv[1])' " + payload +
                    " 2>&1");
  EXPECT_TRUE(std::filesystem::exists(ran)) << "torch.load did not run the payload: the test "
                                               "proves nothing";
}

// A tiny student checkpoint with extra entries of every kind the reader knows.
std::string save_every_kind(const test::ScratchDir& dir) {
  torch::manual_seed(5);
  SegNet net = make_net("student", test::tiny_config("student"));
  c10::impl::GenericDict extra(c10::StringType::get(), c10::AnyType::get());
  c10::impl::GenericDict optimizer(c10::StringType::get(), c10::TensorType::get());
  optimizer.insert("head.bias.exp_avg", torch::randn({3}, torch::kDouble));
  extra.insert("optimizer", optimizer);
  extra.insert("none", c10::IValue());
  extra.insert("flag", false);
  extra.insert("big", -(int64_t{1} << 50));
  extra.insert("real", -0.0);
  extra.insert("text", std::string("\xc3\xa9t\xc3\xa9"));
  extra.insert("bf16", torch::randn({2, 3}).to(torch::kBFloat16));
  extra.insert("half", torch::randn({4}).to(torch::kHalf));
  extra.insert("mask", torch::tensor({true, false, true}));
  extra.insert("view", torch::arange(20, torch::kInt).reshape({4, 5}).slice(1, 1, 4).t());
  extra.insert("scalar", torch::tensor(2.5));
  extra.insert("empty", torch::zeros({0, 3}));
  extra.insert("ints", c10::List<int64_t>({1, 2, 3}));
  extra.insert("reals", c10::List<double>({0.5, -1}));
  extra.insert("tensors", c10::List<at::Tensor>({torch::ones({2}), torch::zeros({1})}));
  extra.insert("pair", c10::ivalue::Tuple::create({c10::IValue(int64_t{1}), c10::IValue("x")}));
  c10::Dict<int64_t, std::string> by_int;
  by_int.insert(10, "ten");
  by_int.insert(-2, "minus two");
  extra.insert("by_int", by_int);
  const std::string path = dir.str("kinds.pt");
  save_checkpoint(path, *net, PreprocessPlan{}, extra);
  return path;
}

TEST(CheckpointPython, DigestAgreesWithCpp) {
  if (!have_torch()) GTEST_SKIP() << kPython << " cannot import torch (Debian's python3-torch)";
  test::ScratchDir dir("ckpt_pydigest");
  const std::string path = save_every_kind(dir);
  const std::string digest = read_checkpoint(path).digest;
  std::ofstream(dir.str("check.py")) << R"(import sys, torch, kdseg
d = kdseg.load_dict(sys.argv[1])
ref = torch.load(sys.argv[1])
assert sorted(d) == sorted(ref), (sorted(d), sorted(ref))
def same(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) == type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) == type(b) and a == b
for k in d:
    assert same(d[k], ref[k]), k
print(kdseg.content_digest(d), d["digest"])
ckpt = kdseg.read_checkpoint(sys.argv[1])
model, plan = kdseg.load(sys.argv[1])
assert ckpt["version"] == 2 and ckpt["digest"] == d["digest"]
)";
  const test::RunResult r = test::run_command(python(dir.str("check.py") + " " + path));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, digest + " " + digest + "\n");
}

TEST(CheckpointPython, DamageIsRefused) {
  if (!have_torch()) GTEST_SKIP() << kPython << " cannot import torch (Debian's python3-torch)";
  test::ScratchDir dir("ckpt_pydamage");
  const std::string good = save_every_kind(dir);
  const Checkpoint ckpt = read_checkpoint(good);
  std::vector<uint8_t> bytes = read_file(good);

  // The content changed under an intact zip: the digest is what sees it.
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", std::string(kCheckpointFormat));
  dict.insert("version", kCheckpointVersion);
  dict.insert("arch", ckpt.arch);
  dict.insert("config", nlohmann::json{{"model", ckpt.model}}.dump());
  StateDict changed = ckpt.state.copy();
  changed.insert_or_assign("head.bias", changed.at("head.bias") + 1e-3);
  dict.insert("state_dict", changed);
  dict.insert("digest", ckpt.digest);
  const std::string mismatch = dir.str("mismatch.pt");
  write_bytes(mismatch, torch::pickle_save(c10::IValue(dict)));
  // One flipped bit inside the first weight's bytes (found by their value), and a truncation.
  const at::Tensor w0 = ckpt.state.begin()->value().contiguous();
  const auto* w = static_cast<const uint8_t*>(w0.data_ptr());
  const auto at = std::search(bytes.begin(), bytes.end(), w, w + w0.nbytes());
  ASSERT_NE(at, bytes.end());
  std::vector<uint8_t> flipped = bytes;
  flipped[static_cast<size_t>(at - bytes.begin()) + 5] ^= 0x10;
  const std::string flip = dir.str("flipped.pt"), cut = dir.str("cut.pt");
  write_bytes(flip, std::vector<char>(flipped.begin(), flipped.end()));
  write_bytes(cut, std::vector<char>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  for (const auto& [path, says] : std::vector<std::pair<std::string, std::string>>{
           {mismatch, "does not match its digest"}, {flip, "CRC-32"}, {cut, ""}}) {
    EXPECT_THROW(read_checkpoint(path), Error) << path;
    const test::RunResult r =
        test::run_command(python("-c 'import sys, kdseg; kdseg.load(sys.argv[1])' " + path));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(path + ": "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << r.output;
    std::cout << r.output.substr(
        r.output.rfind("Error: ") == std::string::npos ? 0 : r.output.rfind("Error: "));
  }

  // Version 1 (kdseg before the digest) loads, with a warning.
  ASSERT_EQ(dict.erase("digest"), 1u);
  dict.insert_or_assign("version", int64_t{1});
  const std::string v1 = dir.str("v1.pt");
  write_bytes(v1, torch::pickle_save(c10::IValue(dict)));
  const test::RunResult r = test::run_command(
      python("-c 'import sys, kdseg; m, p = kdseg.load(sys.argv[1]); print(\"loaded\")' " + v1));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: " + v1 + ": checkpoint version 1 has no digest"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("loaded"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg
