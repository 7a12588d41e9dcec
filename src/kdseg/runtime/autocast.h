#pragma once
// bf16 autocast for a scope (docs/design.md §4 "Devices"): convolutions and matrix products run in
// bfloat16 (oneDNN on CPUs with AVX-512 BF16 / AMX, tensor cores on CUDA) while LibTorch's
// autocast policy keeps normalisations, reductions and losses in float32. Compiles against
// LibTorch 1.13 and 2.x, whose autocast APIs differ. LibTorch-free header.
#include <string>

namespace kdseg {

class AutocastGuard {
 public:
  // enabled = false does nothing. device: "cpu" or "cuda[:i]".
  AutocastGuard(bool enabled, const std::string& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_ = false, cuda_ = false, was_enabled_ = false;
};

// True inside an AutocastGuard (or LibTorch's own autocast) for the CPU.
bool cpu_autocast_enabled();

}  // namespace kdseg
