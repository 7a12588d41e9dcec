#include "kdseg/util/memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kdseg {

bool keep_freed_memory() {
#if defined(__GLIBC__)
  // Large blocks from the heap rather than fresh mmaps; freed memory is given back to the kernel
  // only when more than 1 GiB sits unused at the top of the heap.
  bool ok = mallopt(M_MMAP_MAX, 0) == 1;
  ok &= mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  ok &= mallopt(M_TOP_PAD, 64 << 20) == 1;
  return ok;
#else
  return false;
#endif
}

}  // namespace kdseg
