// libFuzzer target for the checkpoint reader (io/checkpoint_file.h, docs/checkpoint.md): any byte
// string must either parse as a verified kdseg checkpoint or raise kdseg::Error — never crash,
// hang, leak, read out of bounds, or call anything the file names. LibTorch-free, so it builds
// in the same instrumented core build as fuzz_nifti:
//
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
//         -DKDSEG_WITH_TORCH=OFF -DKDSEG_BUILD_FUZZ=ON -DKDSEG_BUILD_TESTS=OFF
//         -DKDSEG_BUILD_BENCH=OFF
//   cmake --build build-fuzz --target fuzz_checkpoint
//   build-fuzz/fuzz/fuzz_checkpoint -max_total_time=600 -rss_limit_mb=2048 \
//         -dict=fuzz/checkpoint.dict fuzz/checkpoint_corpus
// The seeds (fuzz/checkpoint_corpus) come from CheckpointCorpus.DISABLED_WriteSeeds
// (tests/models/test_checkpoint_integrity.cpp); CheckpointCorpus.* replays them in the suite.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kdseg/io/checkpoint_file.h"
#include "kdseg/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::make_shared<const std::vector<uint8_t>>(data, data + size);
  try {
    const kdseg::CheckpointFile f = kdseg::parse_checkpoint(bytes, "fuzz");
    // What a parsed file offers must be safe to walk: the digest again over every tensor.
    (void)kdseg::content_digest(f.dict());
  } catch (const kdseg::Error&) {
  }
  try {  // the archive alone (no checkpoint keys needed): more of the pickle machine is reached
    (void)kdseg::content_digest(kdseg::read_pickle_archive(bytes, "fuzz").root);
  } catch (const kdseg::Error&) {
  }
  return 0;
}
