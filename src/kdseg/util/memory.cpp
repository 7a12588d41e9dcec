#include "kdseg/util/memory.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kdseg {

bool keep_freed_memory() {
#if defined(__GLIBC__)
  // Large blocks from the heap rather than fresh mmaps, and freed memory kept (up to 4 GiB
  // trimmed back only when more than that sits unused at the top of the heap).
  bool ok = mallopt(M_MMAP_MAX, 0) == 1;
  ok &= mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  ok &= mallopt(M_TOP_PAD, 64 << 20) == 1;
  return ok;
#else
  return false;
#endif
}

}  // namespace kdseg
