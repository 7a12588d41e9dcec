// A damaged checkpoint is refused, never used (issue 30: before the digest and the strict reader,
// 17 of 24 damaged copies of a student's best.pt loaded and predicted without a word):
//   DamagedCopiesAreAllRefused  24 damaged copies of a tiny student's last.pt (6 truncations,
//                               6 single bit flips, 6 runs of 64 random bytes, 6 zeroed 4 KiB
//                               runs, at seeded random places): read_checkpoint refuses each,
//                               naming the file, and so does `kdseg predict` (exit code non-zero),
//                               while the intact file predicts.
// CheckpointCorpus.DISABLED_WriteSeeds writes the fuzzer's seeds (fuzz/checkpoint_corpus/):
//   build/tests/kdseg_torch_tests --gtest_also_run_disabled_tests
//       --gtest_filter=CheckpointCorpus.DISABLED_WriteSeeds
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "kdseg/io/gzip.h"
#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

struct Damage {
  std::string name;
  std::vector<uint8_t> bytes;
};

// 24 damaged copies of `good`, at places drawn from `seed`.
std::vector<Damage> damaged_copies(const std::vector<uint8_t>& good, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t n = good.size();
  auto place = [&](size_t width) {
    return std::uniform_int_distribution<size_t>(0, n - width)(rng);
  };
  std::vector<Damage> out;
  for (size_t keep : {size_t{0}, n / 4, n / 2, 3 * n / 4, n - 22, n - 1})
    out.push_back(
        {"truncated to " + std::to_string(keep) + " bytes",
         std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(keep))});
  while (out.size() < 24) {
    Damage d{{}, good};
    const size_t kind = (out.size() - 6) / 6;  // 0 bit flip, 1 random bytes, 2 zeroed run
    if (kind == 0) {
      const size_t at = place(1);
      const int bit = std::uniform_int_distribution<int>(0, 7)(rng);
      d.bytes[at] ^= static_cast<uint8_t>(1u << bit);
      d.name = "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " flipped";
    } else if (kind == 1) {
      const size_t at = place(64);
      for (size_t i = 0; i < 64; ++i) d.bytes[at + i] = static_cast<uint8_t>(rng());
      d.name = "64 random bytes at " + std::to_string(at);
    } else {
      const size_t at = place(4096);
      std::fill(d.bytes.begin() + static_cast<ptrdiff_t>(at),
                d.bytes.begin() + static_cast<ptrdiff_t>(at + 4096), 0);
      d.name = "4 KiB zeroed at " + std::to_string(at);
    }
    if (d.bytes == good) continue;  // e.g. zeros over zeros: not damage; draw again
    out.push_back(std::move(d));
  }
  return out;
}

TEST(CheckpointIntegrity, DamagedCopiesAreAllRefused) {
  test::ScratchDir dir("ckpt_damage");
  torch::manual_seed(30);
  SegNet net = make_net("student", test::tiny_config("student"));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters()) p.add_(0.1 * torch::randn_like(p));
  }
  // As the trainer's last.pt: weights, optimiser state, RNG state and counters.
  c10::impl::GenericDict extra(c10::StringType::get(), c10::AnyType::get());
  c10::impl::GenericDict optimizer(c10::StringType::get(), c10::TensorType::get());
  for (const auto& p : net->named_parameters())
    optimizer.insert(p.key() + ".exp_avg", p.value() * 0.5);
  extra.insert("optimizer", optimizer);
  extra.insert("step", int64_t{120});
  extra.insert("rng", at::detail::getDefaultCPUGenerator().get_state());
  PreprocessPlan plan;
  plan.patch = {16, 16, 16};
  const std::string good = dir.str("last.pt");
  save_checkpoint(good, *net, plan, extra);
  const std::vector<uint8_t> bytes = read_file(good);
  ASSERT_GT(bytes.size(), 3u * 4096u);

  test::write_case(dir.str("data"), "C1", Layout::brats2021,
                   test::phantom_labels({20, 20, 16}, {10, 10, 8}, 5));
  const std::string flags = " --in " + dir.str("data") + " --tta none --threads 1 --quiet";
  const test::RunResult intact =
      test::run_kdseg("predict --model " + good + " --out " + dir.str("out_good") + flags);
  ASSERT_EQ(intact.exit_code, 0) << intact.output;  // the copies fail for their damage alone

  int refused = 0, predict_refused = 0;
  const std::vector<Damage> copies = damaged_copies(bytes, 30);
  ASSERT_EQ(copies.size(), 24u);
  for (size_t i = 0; i < copies.size(); ++i) {
    const Damage& d = copies[i];
    const std::string path = dir.str("damaged_" + std::to_string(i) + ".pt");
    write_bytes(path, d.bytes);
    std::string message;
    try {
      load_checkpoint(path);
      ADD_FAILURE() << d.name << ": loaded";
    } catch (const Error& e) {
      message = e.what();
      EXPECT_NE(message.find(path), std::string::npos) << d.name << ": " << message;
      ++refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << d.name << ": not a kdseg::Error: " << e.what();
    }
    const test::RunResult r = test::run_kdseg("predict --model " + path + " --out " +
                                              dir.str("out_" + std::to_string(i)) + flags);
    EXPECT_NE(r.exit_code, 0) << d.name << ": kdseg predict used it\n" << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << d.name << ": " << r.output;
    if (r.exit_code != 0 && r.output.find(path) != std::string::npos) ++predict_refused;
    std::cout << "  " << d.name << ": " << message.substr(0, message.find('\n')) << "\n";
  }
  std::cout << bytes.size() << "-byte last.pt: " << refused << " of " << copies.size()
            << " damaged copies refused by read_checkpoint, " << predict_refused
            << " by kdseg predict\n";
}

// ------------------------------------------------------------------------- the fuzzer's seeds

c10::impl::GenericDict seed_dict(int64_t version) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("format", std::string(kCheckpointFormat));
  d.insert("version", version);
  d.insert("arch", std::string("student"));
  d.insert("config", nlohmann::json{{"model", test::tiny_config("student")}}.dump());
  c10::Dict<std::string, at::Tensor> state;
  state.insert("head.weight", torch::arange(6, torch::kFloat).reshape({3, 2}));
  state.insert("head.bias", torch::full({3}, -0.5));
  d.insert("state_dict", state);
  return d;
}

TEST(CheckpointCorpus, DISABLED_WriteSeeds) {
  const std::filesystem::path out =
      std::filesystem::path(KDSEG_SOURCE_DIR) / "fuzz" / "checkpoint_corpus";
  std::filesystem::create_directories(out);
  auto put = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    write_bytes((out / name).string(), bytes);
    std::cout << name << ": " << bytes.size() << " bytes\n";
  };
  put("valid_minimal.pt", checkpoint_file_bytes(seed_dict(kCheckpointVersion), "seed"));
  c10::impl::GenericDict kinds = seed_dict(kCheckpointVersion);
  c10::impl::GenericDict optimizer(c10::StringType::get(), c10::TensorType::get());
  optimizer.insert("head.bias.exp_avg", torch::tensor({0.25, 0.5, 1.0}, torch::kDouble));
  kinds.insert("optimizer", optimizer);
  kinds.insert("step", int64_t{7});
  kinds.insert("big", int64_t{1} << 40);
  kinds.insert("negative", int64_t{-3});
  kinds.insert("real", 0.1);
  kinds.insert("flag", true);
  kinds.insert("none", c10::IValue());
  kinds.insert("bf16", torch::ones({2}, torch::kBFloat16));
  kinds.insert("mask", torch::tensor({true, false}));
  kinds.insert("view", torch::arange(12, torch::kShort).reshape({3, 4}).slice(1, 1, 3).t());
  kinds.insert("ints", c10::List<int64_t>({1, 2}));
  kinds.insert("tensors", c10::List<at::Tensor>({torch::zeros({1}, torch::kByte)}));
  kinds.insert("pair", c10::ivalue::Tuple::create({c10::IValue(int64_t{1}), c10::IValue("x")}));
  put("valid_every_kind.pt", checkpoint_file_bytes(kinds, "seed"));
  const std::vector<char> v1 = torch::pickle_save(c10::IValue(seed_dict(1)));
  put("valid_version1.pt", std::vector<uint8_t>(v1.begin(), v1.end()));
  // The file: torch.save of a dict whose "x" runs os.system when unpickled.
  const std::string payload = (out / "refused_os_system.pt").string();
  const test::RunResult r = test::run_command(
      std::string(KDSEG_SYSTEM_PYTHON) +
      " -c \"import os, sys, torch\nclass P:\n    def __reduce__(self): return (os.system, "
      "('touch KDSEG_PAYLOAD_RAN',))\ntorch.save({'format': 'kdseg-checkpoint', 'version': 1, "
      "'x': P()}, sys.argv[1])\" " +
      payload);
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace kdseg
