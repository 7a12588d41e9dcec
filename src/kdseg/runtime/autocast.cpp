#include "kdseg/runtime/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace kdseg {
namespace {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool is_on(bool cuda) {
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
}
void set_on(bool cuda, bool on) {
  const auto type = cuda ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_dtype(type, at::kBFloat16);
  at::autocast::set_autocast_enabled(type, on);
}
#else
bool is_on(bool cuda) {
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void set_on(bool cuda, bool on) {
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(on);
  }
}
#endif

}  // namespace

bool cpu_autocast_enabled() {
  return is_on(false);
}

AutocastGuard::AutocastGuard(bool enabled, const std::string& device)
    : enabled_(enabled), cuda_(device.rfind("cuda", 0) == 0) {
  if (!enabled_) return;
  was_enabled_ = is_on(cuda_);
  set_on(cuda_, true);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_on(cuda_, was_enabled_);
}

}  // namespace kdseg
