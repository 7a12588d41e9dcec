#include "kdseg/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "kdseg/util/error.h"

namespace kdseg {

void validate_schedule(const ScheduleOptions& s) {
  if (s.kind != "constant" && s.kind != "step" && s.kind != "exp" && s.kind != "poly")
    throw Error("--schedule", "unknown schedule \"" + s.kind + "\"",
                "one of constant, step (Adam, x0.1 at 75 %), exp (SGD, x0.99 per epoch), poly");
  if (!(s.lr > 0) || !std::isfinite(s.lr)) throw Error("--lr", "must be a positive number");
  if (!(s.drop_at >= 0 && s.drop_at <= 1)) throw Error("--lr-drop-at", "must be in [0, 1]");
  if (!(s.drop > 0)) throw Error("--lr-drop", "must be positive");
  if (!(s.gamma > 0)) throw Error("--lr-gamma", "must be positive");
  if (!(s.power >= 0)) throw Error("--lr-power", "must be >= 0");
  if (s.warmup < 0) throw Error("--warmup", "must be >= 0");
}

double learning_rate(const ScheduleOptions& s, int64_t step, int64_t steps,
                     int64_t steps_per_epoch) {
  double lr = s.lr;
  if (s.kind == "step") {
    if (static_cast<double>(step) >= s.drop_at * static_cast<double>(steps)) lr *= s.drop;
  } else if (s.kind == "exp") {
    lr *= std::pow(s.gamma, static_cast<double>(step / std::max<int64_t>(steps_per_epoch, 1)));
  } else if (s.kind == "poly") {
    const double t = std::min(1.0, static_cast<double>(step) / std::max<int64_t>(steps, 1));
    lr *= std::pow(1.0 - t, s.power);
  }
  if (s.warmup > 0 && step < s.warmup) lr *= static_cast<double>(step + 1) / (s.warmup + 1);
  return lr;
}

}  // namespace kdseg
