#pragma once
// SHA-256 (FIPS 180-4), streaming: the checkpoint's content digest (io/checkpoint_file.h), which
// Python recomputes with hashlib.sha256. Uses the CPU's SHA instructions where it has them
// (x86 SHA-NI, checked at run time), else portable C++; both give the same bytes.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kdseg {

class Sha256 {
 public:
  // portable: the plain C++ rounds even where the CPU has SHA instructions (for the tests)
  explicit Sha256(bool portable = false);
  void update(const void* data, size_t n);
  // The digest of everything given to update(); the object must not be used afterwards.
  std::array<uint8_t, 32> finish();
  // finish() as 64 lowercase hex digits, e.g. "e3b0c442…b855" for no input.
  std::string finish_hex();

 private:
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> block_{};
  size_t used_ = 0;      // bytes waiting in block_
  uint64_t length_ = 0;  // bytes hashed so far
  bool portable_ = false;
};

// The SHA-256 of `n` bytes as 64 lowercase hex digits.
std::string sha256_hex(const void* data, size_t n);
// Whether update() runs on the CPU's SHA instructions (for the benchmark and the tests).
bool sha256_uses_cpu_instructions();

}  // namespace kdseg
