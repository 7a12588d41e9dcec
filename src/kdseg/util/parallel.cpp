#include "kdseg/util/parallel.h"

#include <atomic>
#include <thread>
#include <vector>

#include "kdseg/util/runtime_options.h"

namespace kdseg {

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  const int t = static_cast<int>(std::min<int64_t>(resolve_threads(threads), n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  pool.reserve(t);
  for (int k = 0; k < t; ++k)
    pool.emplace_back([&] {
      for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  for (auto& th : pool) th.join();
}

}  // namespace kdseg
