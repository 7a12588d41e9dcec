#include "kdseg/util/memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace kdseg {

bool keep_freed_memory() {
#if defined(__GLIBC__)
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

}  // namespace kdseg
