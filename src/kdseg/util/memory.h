#pragma once
// Process-wide allocator settings. kdseg allocates and frees volume-sized buffers (tens of MB) all
// the time; an allocator that returns each to the kernel page-faults it back in at every reuse,
// which on small VMs costs more than the work itself (first touch measured at 2.4-3.9 s per GB on
// the project's 2-core VM). keep_freed_memory() makes the process allocator keep freed memory for
// reuse instead:
// - jemalloc, where kdseg was linked with it (Debian's libjemalloc-dev; the build's default):
//   freed pages are never purged (dirty and muzzy decay off, in every arena and every later one).
//   Its size classes keep the heap from fragmenting: measured, the fp32 training step of the
//   paper-size student at 144×144×128 peaks at 5.3 GB instead of 7.8 GB with glibc below;
// - glibc's malloc otherwise: no mmap for large blocks, no trimming.
#include <string>

namespace kdseg {

// Returns false when the allocator does not take the settings (neither jemalloc nor glibc).
bool keep_freed_memory();

// "jemalloc" or "glibc malloc" (or "the C library's malloc"): what serves this process's malloc.
std::string process_allocator();

}  // namespace kdseg
