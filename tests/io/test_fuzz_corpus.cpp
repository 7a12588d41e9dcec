// Replays the fuzzer's corpus (fuzz/corpus, including the inputs that once crashed the reader)
// through the NIfTI decoder in the normal build: each input decodes or raises kdseg::Error.
#include <gtest/gtest.h>

#include <filesystem>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(FuzzCorpus, EveryInputDecodesOrFailsCleanly) {
  const std::filesystem::path dir = std::filesystem::path(KDSEG_SOURCE_DIR) / "fuzz" / "corpus";
  int n = 0, decoded = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::vector<uint8_t> bytes = read_file(e.path().string());
    ++n;
    try {
      NiftiFile f = decode_nifti_file_bytes(bytes.data(), bytes.size(), e.path().string());
      if (f.voxel_bytes() <= (size_t{64} << 20)) to_volume(std::move(f), true, e.path().string());
      ++decoded;
    } catch (const Error&) {
      // A clear error is the right outcome for a malformed input.
    } catch (const std::exception& ex) {
      ADD_FAILURE() << e.path() << ": not a kdseg::Error: " << ex.what();
    }
  }
  EXPECT_GT(n, 8);
  EXPECT_GT(decoded, 0);  // the valid seeds still decode
}

}  // namespace
}  // namespace kdseg
