#pragma once
// Process-wide LibTorch settings every command applies first: thread count and device.
// Deliberately free of LibTorch types so that any file may include it.
#include <string>

#include "kdseg/util/runtime_options.h"

namespace kdseg {

// Sets LibTorch's intra-op thread count (it is 1 unless set on Debian's build) and checks that
// the device exists. Returns the resolved device string. Throws kdseg::Error naming --device.
std::string apply_runtime(const RuntimeOptions& opt);

// One line per fact: kdseg version, LibTorch version, threads, BLAS library in use, oneDNN,
// CUDA, and whether distributed training (c10d Gloo) is built in.
std::string build_info();

}  // namespace kdseg
