#pragma once
// Per-case geometry: where each voxel of a synthetic case comes from in the template. A random
// affine (scaling, small rotations, left-right flip, shift) and a two-level smooth non-rigid warp
// (B-spline free-form deformation) make every brain different; the tumour's mass effect pushes
// tissue away from it with the skull fixed.
#include <array>

#include "kdseg/synth/field.h"

namespace kdseg::synth {

class Rng;

using Mat3 = std::array<std::array<double, 3>, 3>;

struct WarpParams {
  std::array<double, 3> scale{1, 1, 1};         // brain size factor per axis, e.g. 0.9,1.1,1.0
  std::array<double, 3> rotation_deg{0, 0, 0};  // about x, y, z, e.g. 5,-3,8
  bool flip_lr = false;                         // mirror left-right
  Vec3 shift_mm{0, 0, 0};                       // brain centre offset in the output grid
  double coarse_mm = 5, coarse_ctrl_mm = 40;  // SD of the large-scale warp and its control spacing
  double fine_mm = 1.5, fine_ctrl_mm = 16;    // SD of the gyral-scale warp, e.g. 1.5 mm / 16 mm
};

// Random parameters: scale 0.87-1.13 (one factor for the brain, +-4 % per axis), rotations
// uniform in +-8 degrees, left-right flip with probability 1/2, shift +-4 mm.
WarpParams random_warp_params(Rng& rng);

// output (case) mm -> template mm:  T(x) = c_T + A (x - c_O - shift) + d(x), d the FFD.
class CaseTransform {
 public:
  CaseTransform() = default;
  // `out_lo`/`out_hi`: the output box the warp must cover (mm); `template_centre`: brain centre
  // in the template; `output_centre`: where it goes in the output grid. Draws the FFD
  // coefficients from `rng`.
  CaseTransform(const WarpParams& p, const Vec3& template_centre, const Vec3& output_centre,
                const Vec3& out_lo, const Vec3& out_hi, Rng& rng);

  Vec3 affine(const Vec3& x) const;          // c_T + A (x - c_O - shift)
  Vec3 inverse_affine(const Vec3& t) const;  // its inverse (template -> output)
  // The non-rigid displacement d (3 channels, mm) at every voxel of `g`.
  Field displacement_on(const Grid& g) const;
  // Bound on |d| along any axis (coefficients are clipped), mm.
  double max_displacement() const { return max_disp_; }
  const WarpParams& params() const { return p_; }

 private:
  WarpParams p_;
  Vec3 ct_{0, 0, 0}, co_{0, 0, 0};
  Mat3 a_{}, a_inv_{};
  BSplineField coarse_, fine_;
  double max_disp_ = 0;
};

// Mass effect of a tumour: tissue is pushed radially away from `centre` as if a sphere of volume
// `displaced_ml` had been inserted there (incompressible: r_old^3 = r_new^3 - R^3), damped to 0
// towards the skull by the caller's weight. Backward map: new position -> old position.
struct MassEffect {
  Vec3 centre{0, 0, 0};
  double displaced_ml = 0;  // e.g. 20: volume whose insertion pushes the tissue
  // Old position of the tissue found at `x`; `weight` in [0, 1] scales the displacement
  // (0 at the skull).
  Vec3 source_of(const Vec3& x, float weight) const;
  // Radius (mm) beyond which the displacement is below `tol_mm`.
  double reach(double tol_mm = 0.2) const;
};

}  // namespace kdseg::synth
