#pragma once
// Process-wide LibTorch settings every command applies first: thread count and device.
// Deliberately free of LibTorch types so that any file may include it.
#include <string>

#include "kdseg/util/runtime_options.h"

namespace kdseg {

// Sets LibTorch's intra-op thread count (it is 1 unless set on Debian's build) and checks that
// the device exists. Returns the resolved device string. Throws kdseg::Error naming --device.
std::string apply_runtime(const RuntimeOptions& opt);

// The numeric precision of inference: "fp32", "bf16", or "auto" — bf16 where `device` computes it
// natively (a CPU with AVX-512 BF16 or AMX-BF16; a CUDA GPU whose cuDNN runs bf16 convolutions,
// Ampere or later), fp32 elsewhere. `why` says which and why, e.g. "auto: this CPU has AVX-512
// BF16". Throws kdseg::Error naming --precision for another name, and for "bf16" on a CPU without
// native bf16 unless `allow_emulated_bf16` (emulated bf16 is many times slower than fp32).
struct PrecisionChoice {
  bool bf16 = false;
  std::string name;  // "fp32" or "bf16"
  std::string why;
};
PrecisionChoice resolve_precision(const std::string& precision, const std::string& device,
                                  bool allow_emulated_bf16 = false);
// Whether this CPU has native bf16 dot products (AVX-512 BF16 or AMX-BF16).
bool cpu_has_native_bf16();

// One line per fact: kdseg version, LibTorch version, threads, BLAS library in use, oneDNN,
// CUDA, and whether distributed training (c10d Gloo) is built in.
std::string build_info();

}  // namespace kdseg
