// libFuzzer target for the NIfTI reader: any byte string, .nii or .nii.gz, must either decode or
// raise kdseg::Error — never crash, hang, leak or read out of bounds.
//
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
//         -DKDSEG_WITH_TORCH=OFF -DKDSEG_BUILD_FUZZ=ON -DKDSEG_BUILD_TESTS=OFF
//         -DKDSEG_BUILD_BENCH=OFF
//   cmake --build build-fuzz --target fuzz_nifti
//   build-fuzz/fuzz/fuzz_nifti -max_total_time=600 -rss_limit_mb=2048 fuzz/corpus (scripts/fuzz.sh)
#include <cstddef>
#include <cstdint>

#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    kdseg::NiftiFile f = kdseg::decode_nifti_file_bytes(data, size, "fuzz");
    // Keep the conversion bounded: the corpus is about the parser, not about huge volumes.
    if (f.voxel_bytes() <= (size_t{64} << 20)) {
      kdseg::Volume v = kdseg::to_volume(std::move(f), /*allow_nonfinite=*/true, "fuzz");
      // Writing it back must work for anything that was read.
      std::vector<uint8_t> out = kdseg::encode_nifti(v.source, v.data.data(), 0);
      (void)out;
    }
  } catch (const kdseg::Error&) {
  }
  return 0;
}
