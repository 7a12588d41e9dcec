#pragma once
// Helpers shared by bench_infer and bench_train_step: a tiny flag parser, timing statistics,
// process memory, CUDA synchronisation and peak-memory figures (only where this LibTorch has
// CUDA: KDSEG_BENCH_CUDA is defined by bench/CMakeLists.txt when c10_cuda is linked), and the
// measured compute peak of this machine (big GEMMs and a wide convolution, fp32 and bf16).
#include <ATen/ATen.h>
#include <sys/resource.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#ifdef KDSEG_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "kdseg/io/gzip.h"
#include "kdseg/models/blocks.h"
#include "kdseg/runtime/autocast.h"

namespace bench {

// Writes `j` to `path` through a temporary name (no half-written file), making its folder.
inline void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  const std::string text = j.dump(2) + "\n";
  kdseg::write_file_atomic(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// "144x144x128".
inline std::string shape_str(const std::array<int64_t, 3>& s) {
  return kdseg::shape_string({s[0], s[1], s[2]});
}

// --name value / --flag arguments. Unknown flags are an error.
class Args {
 public:
  Args(int argc, char** argv, const std::set<std::string>& flags,
       const std::set<std::string>& options) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (flags.count(a)) {
        values_[a] = "1";
      } else if (options.count(a)) {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        values_[a] = argv[++i];
      } else {
        throw std::runtime_error("unknown argument " + a);
      }
    }
  }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  int64_t num(const std::string& k, int64_t def) const { return has(k) ? std::stoll(get(k)) : def; }

 private:
  std::map<std::string, std::string> values_;
};

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
inline double best(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

// Peak resident set of this process in GiB (ru_maxrss is in KiB on Linux).
inline double peak_rss_gb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}
// Current resident set in GiB.
inline double rss_gb() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return static_cast<double>(resident) * 4096.0 / (1024.0 * 1024.0 * 1024.0);
}

inline bool is_cuda(const std::string& device) {
  return device.rfind("cuda", 0) == 0;
}

inline void sync(const std::string& device) {
  if (is_cuda(device) && torch::cuda::is_available()) torch::cuda::synchronize();
}

inline int cuda_index(const std::string& device) {
  const auto colon = device.find(':');
  return colon == std::string::npos ? 0 : std::stoi(device.substr(colon + 1));
}

// Largest memory allocated by tensors on the CUDA device since the last reset, GiB; -1 when
// this build has no CUDA.
inline double cuda_max_allocated_gb(const std::string& device) {
#ifdef KDSEG_BENCH_CUDA
  if (is_cuda(device) && torch::cuda::is_available()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
    return static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0 * 1024.0);
  }
#endif
  (void)device;
  return -1;
}
inline void cuda_reset_peak(const std::string& device) {
#ifdef KDSEG_BENCH_CUDA
  if (is_cuda(device) && torch::cuda::is_available())
    c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
#endif
  (void)device;
}

// Best-of-n seconds of f().
template <class F>
double time_best(int n, const std::string& device, F&& f) {
  double b = 1e300;
  for (int i = 0; i < n; ++i) {
    sync(device);
    const double t0 = now_s();
    f();
    sync(device);
    b = std::min(b, now_s() - t0);
  }
  return b;
}

struct Peak {
  double gemm_fp32 = 0, gemm_bf16 = 0;  // GFLOP/s of at::mm 2048² (BLAS fp32, oneDNN bf16)
  double conv_fp32 = 0, conv_bf16 = 0;  // GFLOP/s of a 128-channel 3³ conv (oneDNN)
  double fp32() const { return std::max(gemm_fp32, conv_fp32); }
  double bf16() const { return std::max(gemm_bf16, conv_bf16); }
};

// What this machine's kernels reach on compute-bound shapes, with the current thread count:
// the practical peak a network's FLOPs are compared with.
inline Peak measure_peak(const std::string& device, int reps = 3) {
  c10::InferenceMode guard;
  const auto dev = at::Device(device);
  Peak p;
  const int64_t n = is_cuda(device) ? 8192 : 2048;
  at::Tensor a = at::randn({n, n}, at::TensorOptions().device(dev));
  at::Tensor b = at::randn({n, n}, at::TensorOptions().device(dev));
  const double gemm_flop = 2.0 * static_cast<double>(n) * n * n;
  p.gemm_fp32 = gemm_flop / time_best(reps, device, [&] { at::mm(a, b); }) / 1e9;
  at::Tensor ab = a.to(at::kBFloat16), bb = b.to(at::kBFloat16);
  p.gemm_bf16 = gemm_flop / time_best(reps, device, [&] { at::mm(ab, bb); }) / 1e9;
  const int64_t c = 128, s = is_cuda(device) ? 64 : 24;
  at::Tensor x = at::randn({1, c, s, s, s}, at::TensorOptions().device(dev));
  at::Tensor w = at::randn({c, c, 3, 3, 3}, at::TensorOptions().device(dev)) * 0.01;
  const double conv_flop = 2.0 * 27 * c * c * s * s * s;
  p.conv_fp32 = conv_flop / time_best(reps, device, [&] { at::conv3d(x, w, {}, 1, 1); }) / 1e9;
  {
    kdseg::AutocastGuard ac(true, device);
    p.conv_bf16 = conv_flop / time_best(reps, device, [&] { at::conv3d(x, w, {}, 1, 1); }) / 1e9;
  }
  return p;
}

}  // namespace bench
