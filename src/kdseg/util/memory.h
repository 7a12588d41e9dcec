#pragma once
// Process-wide allocator settings. kdseg allocates and frees volume-sized buffers (tens of MB) all
// the time; glibc returns each to the kernel (mmap/munmap) and every reuse page-faults it back in,
// which on small VMs costs more than the work itself. keep_freed_memory() makes glibc keep freed
// memory for reuse instead (no mmap for large blocks, no trimming).
namespace kdseg {

// Returns false when the C library does not support the settings (non-glibc).
bool keep_freed_memory();

}  // namespace kdseg
