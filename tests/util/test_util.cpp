// Small process utilities: allocator settings, parallel_for, errors.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "kdseg/util/error.h"
#include "kdseg/util/memory.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/runtime_options.h"

#if defined(KDSEG_HAVE_JEMALLOC)
#include <jemalloc/jemalloc.h>
#endif

namespace kdseg {
namespace {

TEST(Memory, KeepFreedMemoryTakesEffect) {
#if defined(KDSEG_HAVE_JEMALLOC)
  EXPECT_EQ(process_allocator(), "jemalloc");
  EXPECT_TRUE(keep_freed_memory());
  // Read back: purging is off for arenas made later and for the one this thread uses.
  for (const char* name : {"arenas.dirty_decay_ms", "arenas.muzzy_decay_ms"}) {
    ssize_t v = 0;
    size_t size = sizeof v;
    ASSERT_EQ(mallctl(name, &v, &size, nullptr, 0), 0) << name;
    EXPECT_EQ(v, -1) << name;
  }
  unsigned arena = 0;
  size_t size = sizeof arena;
  ASSERT_EQ(mallctl("thread.arena", &arena, &size, nullptr, 0), 0);
  ssize_t v = 0;
  size = sizeof v;
  const std::string name = "arena." + std::to_string(arena) + ".dirty_decay_ms";
  ASSERT_EQ(mallctl(name.c_str(), &v, &size, nullptr, 0), 0);
  EXPECT_EQ(v, -1) << name;
  // And jemalloc serves the process's malloc: this thread's allocation count sees a malloc.
  bool stats = false;
  size = sizeof stats;
  ASSERT_EQ(mallctl("config.stats", &stats, &size, nullptr, 0), 0);
  if (stats) {
    uint64_t before = 0, after = 0;
    size = sizeof before;
    ASSERT_EQ(mallctl("thread.allocated", &before, &size, nullptr, 0), 0);
    void* volatile p = std::malloc(1 << 20);
    ASSERT_EQ(mallctl("thread.allocated", &after, &size, nullptr, 0), 0);
    std::free(p);
    EXPECT_GE(after - before, uint64_t{1} << 20);
  }
#elif defined(__GLIBC__)
  EXPECT_EQ(process_allocator(), "glibc malloc");
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
  EXPECT_EQ(resolve_threads(1), 1);
  // 0 (and any non-positive count) is every core (std::thread::hardware_concurrency).
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  ASSERT_GT(cores, 0);
  EXPECT_EQ(resolve_threads(0), cores);
  EXPECT_EQ(resolve_threads(-1), cores);
}

TEST(Errors, MessageNamesWhereWhatAndHint) {
  Error e("a/b.nii.gz", "truncated", "copy it again");
  EXPECT_STREQ(e.what(), "a/b.nii.gz: truncated\n  HINT: copy it again");
  EXPECT_EQ(e.where(), "a/b.nii.gz");
  EXPECT_EQ(Error("", "x").what(), std::string("x"));
}

}  // namespace
}  // namespace kdseg
