// The checkpoint reader without LibTorch (io/checkpoint_file.h) on the fuzzer's seeds
// (fuzz/checkpoint_corpus, written by CheckpointCorpus.DISABLED_WriteSeeds):
//   Sha256.*                           FIPS 180-4 test vectors; the CPU's SHA instructions and the
//                                      portable rounds agree on every length and split.
//   CheckpointCorpus.Every…Cleanly     the corpus replayed (as fuzz/fuzz_checkpoint.cpp runs it):
//                                      each input parses or raises kdseg::Error; the valid seeds
//                                      parse, the payload seed is refused naming its global.
//   CheckpointCorpus.EveryBitFlip…     every single-bit flip of every byte of the valid seeds, and
//                                      every truncation, is refused.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kdseg/io/checkpoint_file.h"
#include "kdseg/io/gzip.h"
#include "kdseg/util/error.h"
#include "kdseg/util/sha256.h"

namespace kdseg {
namespace {

namespace fs = std::filesystem;

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  for (bool portable : {false, true}) {
    Sha256 h(portable);
    const std::string a(1000, 'a');
    for (int i = 0; i < 1000; ++i) h.update(a.data(), a.size());  // one million 'a'
    EXPECT_EQ(h.finish_hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
}

TEST(Sha256, CpuInstructionsAgreeWithThePortableRounds) {
  std::cout << "SHA-256 on "
            << (sha256_uses_cpu_instructions() ? "the CPU's SHA instructions"
                                               : "the portable rounds")
            << "\n";
  std::mt19937 rng(1);
  std::vector<uint8_t> data(1000);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  for (size_t n = 0; n <= data.size(); n += (n < 200 ? 1 : 37)) {
    Sha256 fast, plain(true);
    const size_t split = n / 3;  // updates that straddle blocks
    fast.update(data.data(), split);
    fast.update(data.data() + split, n - split);
    plain.update(data.data(), n);
    ASSERT_EQ(fast.finish_hex(), plain.finish_hex()) << n;
  }
}

std::vector<fs::path> corpus() {
  std::vector<fs::path> files;
  for (const auto& e :
       fs::directory_iterator(fs::path(KDSEG_SOURCE_DIR) / "fuzz" / "checkpoint_corpus"))
    files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::shared_ptr<const std::vector<uint8_t>> bytes_of(const fs::path& p) {
  return std::make_shared<const std::vector<uint8_t>>(read_file(p.string()));
}

TEST(CheckpointCorpus, EveryInputParsesOrFailsCleanly) {
  int n = 0, parsed = 0;
  for (const fs::path& p : corpus()) {
    ++n;
    const std::string name = p.filename().string();
    try {
      const CheckpointFile f = parse_checkpoint(bytes_of(p), name);
      ++parsed;
      EXPECT_EQ(name.rfind("valid_", 0), 0u) << name << " parsed";
      EXPECT_EQ(f.digest.empty(), f.version == 1) << name;
      EXPECT_EQ(f.warnings.size(), f.version == 1 ? 1u : 0u) << name;
    } catch (const Error& e) {
      EXPECT_NE(name.rfind("valid_", 0), 0u) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind(name + ": ", 0), 0u) << e.what();
      if (name == "refused_os_system.pt")
        EXPECT_NE(std::string(e.what()).find("asks to call posix.system"), std::string::npos)
            << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": not a kdseg::Error: " << e.what();
    }
  }
  EXPECT_GE(n, 4);
  EXPECT_GE(parsed, 3);  // the three valid seeds
}

// A valid seed, the bit-flipped copy of every byte (bit i % 8 of byte i, and bit 7 - i % 8), and
// every truncation: all refused — the zip's every byte is checked, then the CRC-32s, the digest.
TEST(CheckpointCorpus, EveryBitFlipAndTruncationIsRefused) {
  for (const fs::path& p : corpus()) {
    const std::string name = p.filename().string();
    if (name.rfind("valid_", 0) != 0) continue;
    const std::vector<uint8_t> good = read_file(p.string());
    ASSERT_NO_THROW(parse_checkpoint(bytes_of(p), name));
    size_t accepted = 0;
    for (size_t i = 0; i < good.size(); ++i)
      for (int bit : {static_cast<int>(i % 8), static_cast<int>(7 - i % 8)}) {
        auto bad = std::make_shared<std::vector<uint8_t>>(good);
        (*bad)[i] ^= static_cast<uint8_t>(1u << bit);
        try {
          parse_checkpoint(bad, name);
          ++accepted;
          ADD_FAILURE() << name << ": bit " << bit << " of byte " << i << " flipped: accepted";
        } catch (const Error&) {
        }
      }
    for (size_t keep = 0; keep < good.size(); ++keep) {
      try {
        parse_checkpoint(std::make_shared<std::vector<uint8_t>>(good.begin(), good.begin() + keep),
                         name);
        ++accepted;
        ADD_FAILURE() << name << ": truncated to " << keep << " bytes: accepted";
      } catch (const Error&) {
      }
    }
    std::cout << name << ": " << good.size() << " bytes, " << 2 * good.size() << " bit flips and "
              << good.size() << " truncations, " << accepted << " accepted\n";
  }
}

}  // namespace
}  // namespace kdseg
