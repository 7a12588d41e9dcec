#pragma once
// Options every command takes (docs/design.md §2 "Options"). Free of LibTorch.
#include <string>

namespace kdseg {

struct RuntimeOptions {
  int threads = 0;             // worker threads; 0 = all cores of this machine, e.g. 2
  std::string device = "cpu";  // "cpu", "cuda", "cuda:1"; "auto" picks CUDA when present
};

// The thread count in force: `threads`, or the machine's core count when 0.
int resolve_threads(int threads);

}  // namespace kdseg
