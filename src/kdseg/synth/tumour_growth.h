#pragma once
// Glioma growth as a reaction-diffusion (Fisher-KPP) process:  du/dt = div(D grad u) + rho u (1-u)
// with tumour cell density u in [0, 1], diffusion D several times faster in white matter than in
// grey matter and zero in CSF (no flux into it: face diffusivities are harmonic means). Explicit
// finite differences on the growth grid, restricted to a box around the tumour that grows with it.
// The visible tumour follows the classic two-threshold reading (Swanson et al.): the core where
// u is high, the T2/FLAIR abnormality where u exceeds a low threshold.
#include <vector>

#include "kdseg/synth/field.h"

namespace kdseg::synth {

struct GrowthParams {
  std::vector<Vec3> seeds;              // mm on the growth grid, e.g. one in white matter
  std::vector<double> seed_delay_days;  // when each seed starts (0 = at once), same length
  double rho_per_day = 0.05;            // proliferation rate, e.g. 0.02-0.1
  double infiltration_mm = 5;           // sqrt(D_wm / rho): how far cells run ahead, e.g. 3-8
  double u_core = 0.5;                  // density that counts as "core reached" (age clock)
  double u_visible = 0.12;              // density whose region is grown to target_ml
  double target_ml = 30;                // stop when {u > u_visible} reaches this volume
  int max_steps = 20000;                // safety stop
};

struct GrowthResult {
  Field u;          // density on the growth grid
  Field age_days;   // days since u first exceeded u_core (0 where it never did)
  double days = 0;  // simulated time
  int steps = 0;
  double visible_ml = 0;  // volume of {u > u_visible} at the end
  bool reached_target = false;
};

// `diffusivity`: relative diffusivity per voxel of `grid` (1 = white matter, e.g. 0.2 = grey,
// 0 = CSF or outside the brain). The absolute D is infiltration_mm^2 * rho.
GrowthResult grow_tumour(const Grid& grid, const std::vector<float>& diffusivity,
                         const GrowthParams& p);

// Speed of a Fisher-KPP front in a homogeneous medium, 2 sqrt(D rho), in mm/day.
inline double fkpp_front_speed(double d_mm2_per_day, double rho_per_day);

}  // namespace kdseg::synth

#include <cmath>
inline double kdseg::synth::fkpp_front_speed(double d, double rho) {
  return 2 * std::sqrt(d * rho);
}
