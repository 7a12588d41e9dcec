#pragma once
// parallel_for: runs fn(i) for i in [0, n) on `threads` threads (0 = all cores), dynamically
// balanced. fn must not throw: batch commands catch per item and collect failures themselves.
#include <cstdint>
#include <functional>

namespace kdseg {

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn);

}  // namespace kdseg
