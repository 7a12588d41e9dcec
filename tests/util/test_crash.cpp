// install_crash_report (util/crash.h): a crash says what happened, with a backtrace, and still
// dies of its signal (exit status 128 + signal, core dumps as before).
#include <gtest/gtest.h>

#include <csignal>

#include "kdseg/util/crash.h"

namespace kdseg {
namespace {

[[noreturn]] void crash_with(int sig) {
  install_crash_report();
  std::raise(sig);
  std::abort();  // not reached: the handler re-raises with the default action
}

TEST(CrashReport, SegfaultIsReportedWithABacktraceAndStillKills) {
  EXPECT_EXIT(crash_with(SIGSEGV), testing::KilledBySignal(SIGSEGV),
              "kdseg: crashed: SIGSEGV.*please report.*\n.*\\[0x");
}

TEST(CrashReport, BusErrorNamesItsLikelyCause) {
  EXPECT_EXIT(crash_with(SIGBUS), testing::KilledBySignal(SIGBUS),
              "kdseg: crashed: SIGBUS \\(a memory-mapped file shrank");
}

}  // namespace
}  // namespace kdseg
