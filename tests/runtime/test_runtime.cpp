// The LibTorch runtime settings every command applies: threads, device, build facts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <string>

#include "kdseg/runtime/runtime.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(Runtime, ThreadCountIsSetExplicitly) {
  RuntimeOptions opt;
  opt.threads = 2;
  EXPECT_EQ(apply_runtime(opt), "cpu");
  EXPECT_EQ(at::get_num_threads(), 2);
  opt.threads = 1;
  apply_runtime(opt);
  EXPECT_EQ(at::get_num_threads(), 1);
  opt.threads = 0;  // all cores
  apply_runtime(opt);
  EXPECT_EQ(at::get_num_threads(), resolve_threads(0));
}

TEST(Runtime, BadDevicesAreRefusedWithTheFlagNamed) {
  RuntimeOptions opt;
  opt.device = "gpu7";
  try {
    apply_runtime(opt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device gpu7"), std::string::npos);
  }
  if (!torch::cuda::is_available()) {
    opt.device = "cuda";
    EXPECT_THROW(apply_runtime(opt), Error);
  }
  opt.device = "auto";
  EXPECT_NO_THROW(apply_runtime(opt));
}

TEST(Runtime, BuildInfoNamesTheBlasAndOneDnn) {
  std::string info = build_info();
  EXPECT_NE(info.find("libtorch"), std::string::npos);
  EXPECT_NE(info.find("blas"), std::string::npos);
  EXPECT_NE(info.find("mkldnn yes"), std::string::npos) << info;
}

TEST(Runtime, PrecisionAutoIsBf16ExactlyWhereTheCpuHasItNatively) {
  EXPECT_FALSE(resolve_precision("fp32", "cpu").bf16);
  // Asked-for bf16: taken where native; where it would be emulated, refused unless allowed.
  if (cpu_has_native_bf16()) {
    EXPECT_TRUE(resolve_precision("bf16", "cpu").bf16);
  } else {
    try {
      resolve_precision("bf16", "cpu");
      ADD_FAILURE() << "bf16 on a CPU without native bf16 must be refused";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--allow-emulated-bf16"), std::string::npos) << e.what();
    }
  }
  const PrecisionChoice forced = resolve_precision("bf16", "cpu", /*allow_emulated_bf16=*/true);
  EXPECT_TRUE(forced.bf16);
  EXPECT_EQ(forced.why.find("emulated") != std::string::npos, !cpu_has_native_bf16()) << forced.why;
  const PrecisionChoice a = resolve_precision("auto", "cpu");
  EXPECT_EQ(a.bf16, cpu_has_native_bf16());
  EXPECT_EQ(a.name, a.bf16 ? "bf16" : "fp32");
  EXPECT_EQ(a.why.rfind("auto: ", 0), 0u) << a.why;
  // What /proc/cpuinfo says, where there is one.
  std::ifstream info("/proc/cpuinfo");
  std::string text((std::istreambuf_iterator<char>(info)), std::istreambuf_iterator<char>());
  if (!text.empty())
    EXPECT_EQ(cpu_has_native_bf16(), text.find("avx512_bf16") != std::string::npos ||
                                         text.find("amx_bf16") != std::string::npos);
  EXPECT_THROW(resolve_precision("fp16", "cpu"), Error);
}

}  // namespace
}  // namespace kdseg
