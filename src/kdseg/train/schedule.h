#pragma once
// Learning-rate schedules of the paper's three teachers (docs/design.md §3-4), as one pure function
// of the step: Adam with a step drop (unet, resunet: ×0.1 at 75 % of the steps), SGD with an
// exponential decay per epoch (cascade: ×0.99), and nnU-Net's poly decay. LibTorch-free.
#include <cstdint>
#include <string>

namespace kdseg {

struct ScheduleOptions {
  std::string kind = "step";  // constant, step, exp or poly
  double lr = 1e-4;           // initial learning rate, e.g. 0.1 (SGD)
  double drop_at = 0.75;      // step: share of the steps after which lr is multiplied by drop
  double drop = 0.1;          // step: the factor, e.g. 0.1
  double gamma = 0.99;        // exp: factor per epoch (steps_per_epoch steps)
  double power = 0.9;         // poly: lr (1 - step/steps)^power
  int64_t warmup = 0;         // linear warm-up over the first steps, e.g. 50; 0 = none
};

// Throws kdseg::Error for an unknown kind or out-of-range values.
void validate_schedule(const ScheduleOptions& s);

// The learning rate of optimiser step `step` (0-based) of `steps`, epochs of steps_per_epoch.
double learning_rate(const ScheduleOptions& s, int64_t step, int64_t steps,
                     int64_t steps_per_epoch);

}  // namespace kdseg
