#include "kdseg/util/memory.h"

#include <sys/types.h>

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(KDSEG_HAVE_JEMALLOC)
#include <jemalloc/jemalloc.h>
#elif defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kdseg {

bool keep_freed_memory() {
#if defined(KDSEG_HAVE_JEMALLOC)
  // Arenas made later take "arenas.*"; the existing ones are set one by one.
  ssize_t never = -1;
  unsigned n = 0;
  size_t size = sizeof n;
  bool ok = mallctl("arenas.narenas", &n, &size, nullptr, 0) == 0;
  for (const char* kind : {"dirty", "muzzy"}) {
    const std::string suffix = std::string(".") + kind + "_decay_ms";
    ok &= mallctl(("arenas" + suffix).c_str(), nullptr, nullptr, &never, sizeof never) == 0;
    for (unsigned i = 0; i < n; ++i) {
      const std::string name = "arena." + std::to_string(i) + suffix;
      // An arena index not in use yet answers EFAULT: it takes "arenas.*" when it is made.
      mallctl(name.c_str(), nullptr, nullptr, &never, sizeof never);
    }
  }
  return ok;
#elif defined(__GLIBC__)
  // Large blocks from the heap rather than fresh mmaps, and freed memory never given back to the
  // kernel (M_TRIM_THRESHOLD -1). A whole-crop forward pass of the paper-size student frees
  // 1-3 GB at its end; with the former 1 GiB trim threshold most of it went back to the kernel
  // and every case faulted it in again: measured on the 2-core VM, first touch runs at ~0.3 GB/s
  // (3.5 s per GB), which made a bf16 pass 7.5-9 s instead of 3 s.
  bool ok = mallopt(M_MMAP_MAX, 0) == 1;
  ok &= mallopt(M_TRIM_THRESHOLD, -1) == 1;
  ok &= mallopt(M_TOP_PAD, 64 << 20) == 1;
  return ok;
#else
  return false;
#endif
}

std::string process_allocator() {
#if defined(KDSEG_HAVE_JEMALLOC)
  return "jemalloc";
#elif defined(__GLIBC__)
  return "glibc malloc";
#else
  return "the C library's malloc";
#endif
}

}  // namespace kdseg
