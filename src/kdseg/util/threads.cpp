#include <thread>

#include "kdseg/util/runtime_options.h"

namespace kdseg {

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  int n = static_cast<int>(std::thread::hardware_concurrency());
  return n > 0 ? n : 1;
}

}  // namespace kdseg
