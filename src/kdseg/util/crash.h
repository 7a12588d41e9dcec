#pragma once
// A crash report instead of a bare "Segmentation fault": on SIGSEGV, SIGBUS, SIGILL, SIGFPE or
// SIGABRT kdseg writes what happened and a backtrace of the crashing thread to stderr, then dies
// of the same signal (so the exit status and any core dump are as without the handler).
// Addresses in the backtrace resolve with `addr2line -f -C -e $(which kdseg) ADDR` (or gdb).

namespace kdseg {

// Installs the handlers (on an alternate stack, so that a stack overflow is reported too).
// Call once, early in main.
void install_crash_report();

}  // namespace kdseg
