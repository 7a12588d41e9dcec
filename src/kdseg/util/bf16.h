#pragma once
// bf16 ↔ float32 for one value, bit for bit as LibTorch and oneDNN convert: bf16 is the upper half
// of a float32, and rounding to it is to nearest even (finite values).
#include <cstdint>
#include <cstring>

namespace kdseg {

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace kdseg
