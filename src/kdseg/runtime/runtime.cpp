#include "kdseg/runtime/runtime.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "kdseg/dist/process_group.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace {

// The BLAS shared object this process actually mapped (Debian picks it through alternatives).
std::string blas_in_use() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    if (path.find("blas") != std::string::npos) return path;
  }
  return "none mapped";
}

}  // namespace

std::string apply_runtime(const RuntimeOptions& opt) {
  if (opt.threads < 0) throw Error("--threads", "must be >= 0, got " + std::to_string(opt.threads));
  at::set_num_threads(resolve_threads(opt.threads));
  std::string dev = opt.device;
  if (dev == "auto") dev = torch::cuda::is_available() ? "cuda" : "cpu";
  try {
    torch::Device d(dev);
    if (d.is_cuda() && !torch::cuda::is_available())
      throw Error("--device " + dev, "CUDA is not available in this build or on this machine",
                  "use --device cpu");
    if (d.is_cuda() && d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count()))
      throw Error("--device " + dev, "no such CUDA device (" +
                                         std::to_string(torch::cuda::device_count()) + " present)");
  } catch (const c10::Error& e) {
    throw Error("--device " + dev, "not a device name", "use cpu, cuda or cuda:N");
  }
  return dev;
}

std::string build_info() {
  std::ostringstream s;
  s << "kdseg " << KDSEG_VERSION << "\n";
  s << "libtorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "."
    << TORCH_VERSION_PATCH << "\n";
  s << "threads " << at::get_num_threads() << " (of " << std::thread::hardware_concurrency()
    << " cores)\n";
  s << "blas " << blas_in_use() << "\n";
  s << "mkldnn " << (at::hasMKLDNN() ? "yes" : "no") << "\n";
  s << "cuda "
    << (torch::cuda::is_available() ? std::to_string(torch::cuda::device_count()) + " device(s)"
                                    : std::string("no"))
    << "\n";
  s << "distributed " << distributed_backends() << "\n";  // e.g. "gloo", "none (built ...)"
  return s.str();
}

bool cpu_has_native_bf16() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

PrecisionChoice resolve_precision(const std::string& precision, const std::string& device,
                                  bool allow_emulated_bf16) {
  PrecisionChoice c;
  if (precision == "fp32" || precision == "bf16") {
    c.bf16 = precision == "bf16";
    c.name = precision;
    c.why = "asked for";
    if (c.bf16 && device.rfind("cuda", 0) != 0 && !cpu_has_native_bf16()) {
      if (!allow_emulated_bf16)
        throw Error("--precision bf16",
                    "this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 would be emulated, "
                    "many times slower than fp32 and several GB larger (measured on a 2-core "
                    "AVX2 CPU: over 4 min per 1 mm case against 23 s in fp32)",
                    "use --precision fp32 (or auto, which is fp32 here), or add "
                    "--allow-emulated-bf16 to run it anyway");
      c.why = "asked for, emulated: this CPU has no native bf16 (--allow-emulated-bf16)";
    }
    return c;
  }
  if (precision != "auto")
    throw Error("--precision " + precision, "unknown precision", "use fp32, bf16 or auto");
  if (device.rfind("cuda", 0) == 0) {
    c.bf16 = at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8();
    c.why = c.bf16 ? "auto: this GPU runs bf16 convolutions natively"
                   : "auto: this GPU has no native bf16 convolutions";
  } else {
    c.bf16 = cpu_has_native_bf16();
    c.why = c.bf16 ? "auto: this CPU has native bf16 (AVX-512 BF16 or AMX)"
                   : "auto: this CPU has no native bf16 (AVX-512 BF16 or AMX)";
  }
  c.name = c.bf16 ? "bf16" : "fp32";
  return c;
}

}  // namespace kdseg
