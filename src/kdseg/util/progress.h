#pragma once
// Progress lines for long batch work: "[3/40] BraTS_003 ok 1.2 s  (ETA 44 s)". Thread-safe.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace kdseg {

class Progress {
 public:
  Progress(std::string what, int64_t total, bool quiet = false);
  // One item finished; `message` follows its name, e.g. "ok" or "FAILED: ...".
  void done(const std::string& item, const std::string& message);

 private:
  std::string what_;
  int64_t total_, n_done_ = 0;
  bool quiet_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
};

std::string format_seconds(double s);

}  // namespace kdseg
