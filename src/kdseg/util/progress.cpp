#include "kdseg/util/progress.h"

#include <cstdio>

namespace kdseg {

std::string format_seconds(double s) {
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

Progress::Progress(std::string what, int64_t total, bool quiet)
    : what_(std::move(what)),
      total_(total),
      quiet_(quiet),
      start_(std::chrono::steady_clock::now()) {}

void Progress::done(const std::string& item, const std::string& message) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++n_done_;
  if (quiet_) return;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double eta = n_done_ < total_ ? elapsed / n_done_ * (total_ - n_done_) : 0;
  std::fprintf(stderr, "%s [%lld/%lld] %s %s  (elapsed %s, ETA %s)\n", what_.c_str(),
               static_cast<long long>(n_done_), static_cast<long long>(total_), item.c_str(),
               message.c_str(), format_seconds(elapsed).c_str(), format_seconds(eta).c_str());
}

}  // namespace kdseg
