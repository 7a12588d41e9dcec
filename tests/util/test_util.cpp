// Small process utilities: allocator settings, parallel_for, errors.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "kdseg/util/error.h"
#include "kdseg/util/memory.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/runtime_options.h"

namespace kdseg {
namespace {

TEST(Memory, KeepFreedMemoryTakesEffectOnGlibc) {
#if defined(__GLIBC__)
  EXPECT_TRUE(keep_freed_memory());
#else
  EXPECT_FALSE(keep_freed_memory());
#endif
}

TEST(Parallel, EveryIndexRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 0}) {
    std::vector<std::atomic<int>> hits(101);
    parallel_for(101, threads, [&](int64_t i) { hits[i]++; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1) << threads;
  }
  parallel_for(0, 2, [](int64_t) { FAIL(); });
}

TEST(Threads, ZeroMeansEveryCore) {
  EXPECT_EQ(resolve_threads(3), 3);
  EXPECT_GE(resolve_threads(0), 1);
}

TEST(Errors, MessageNamesWhereWhatAndHint) {
  Error e("a/b.nii.gz", "truncated", "copy it again");
  EXPECT_STREQ(e.what(), "a/b.nii.gz: truncated\n  HINT: copy it again");
  EXPECT_EQ(e.where(), "a/b.nii.gz");
  EXPECT_EQ(Error("", "x").what(), std::string("x"));
}

}  // namespace
}  // namespace kdseg
