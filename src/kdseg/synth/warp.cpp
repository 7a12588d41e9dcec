#include "kdseg/synth/warp.h"

#include <algorithm>
#include <cmath>

#include "kdseg/synth/rng.h"

namespace kdseg::synth {

namespace {
Mat3 mul(const Mat3& a, const Mat3& b) {
  Mat3 c{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) c[i][j] += a[i][k] * b[k][j];
  return c;
}
Mat3 rotation(int axis, double deg) {
  const double r = deg * M_PI / 180.0, c = std::cos(r), s = std::sin(r);
  Mat3 m{};
  m[axis][axis] = 1;
  const int a = (axis + 1) % 3, b = (axis + 2) % 3;
  m[a][a] = c;
  m[a][b] = -s;
  m[b][a] = s;
  m[b][b] = c;
  return m;
}
Mat3 transpose(const Mat3& a) {
  Mat3 t{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) t[i][j] = a[j][i];
  return t;
}
}  // namespace

WarpParams random_warp_params(Rng& rng) {
  WarpParams p;
  const double g = rng.uniform(0.87, 1.13);
  for (auto& s : p.scale) s = g * rng.uniform(0.96, 1.04);
  for (auto& r : p.rotation_deg) r = rng.uniform(-8, 8);
  p.flip_lr = rng.bernoulli(0.5);
  for (auto& t : p.shift_mm) t = rng.uniform(-4, 4);
  p.coarse_mm = rng.uniform(3, 6);
  p.fine_mm = rng.uniform(1.0, 2.0);
  return p;
}

CaseTransform::CaseTransform(const WarpParams& p, const Vec3& template_centre,
                             const Vec3& output_centre, const Vec3& out_lo, const Vec3& out_hi,
                             Rng& rng)
    : p_(p), ct_(template_centre), co_(output_centre) {
  // Output -> template: undo scaling (a brain scale > 1 samples the template more densely),
  // rotate, flip.
  Mat3 s{};
  for (int a = 0; a < 3; ++a) s[a][a] = 1.0 / p.scale[a];
  Mat3 f{};
  f[0][0] = p.flip_lr ? -1 : 1;
  f[1][1] = f[2][2] = 1;
  Mat3 r = mul(rotation(2, p.rotation_deg[2]),
               mul(rotation(1, p.rotation_deg[1]), rotation(0, p.rotation_deg[0])));
  a_ = mul(f, mul(r, s));
  Mat3 s_inv{};
  for (int a = 0; a < 3; ++a) s_inv[a][a] = p.scale[a];
  a_inv_ = mul(s_inv, mul(transpose(r), f));
  coarse_ = BSplineField(out_lo, out_hi, p.coarse_ctrl_mm, 3);
  fine_ = BSplineField(out_lo, out_hi, p.fine_ctrl_mm, 3);
  // Clip coefficients well below the folding limit of a cubic FFD (~0.4 x control spacing).
  const double clip_c = std::min(3 * p.coarse_mm / 0.3318, 0.3 * p.coarse_ctrl_mm);
  const double clip_f = std::min(3 * p.fine_mm / 0.3318, 0.3 * p.fine_ctrl_mm);
  Rng rc = rng.split(), rf = rng.split();
  coarse_.randomize(rc, p.coarse_mm, clip_c);
  fine_.randomize(rf, p.fine_mm, clip_f);
  max_disp_ = clip_c + clip_f;
}

Vec3 CaseTransform::affine(const Vec3& x) const {
  Vec3 d{x[0] - co_[0] - p_.shift_mm[0], x[1] - co_[1] - p_.shift_mm[1],
         x[2] - co_[2] - p_.shift_mm[2]};
  Vec3 t{};
  for (int i = 0; i < 3; ++i) t[i] = ct_[i] + a_[i][0] * d[0] + a_[i][1] * d[1] + a_[i][2] * d[2];
  return t;
}

Vec3 CaseTransform::inverse_affine(const Vec3& t) const {
  Vec3 d{t[0] - ct_[0], t[1] - ct_[1], t[2] - ct_[2]};
  Vec3 x{};
  for (int i = 0; i < 3; ++i)
    x[i] =
        co_[i] + p_.shift_mm[i] + a_inv_[i][0] * d[0] + a_inv_[i][1] * d[1] + a_inv_[i][2] * d[2];
  return x;
}

Field CaseTransform::displacement_on(const Grid& g) const {
  Field d = coarse_.eval_on_grid(g);
  Field f = fine_.eval_on_grid(g);
  for (size_t i = 0; i < d.v.size(); ++i) d.v[i] += f.v[i];
  return d;
}

Vec3 MassEffect::source_of(const Vec3& x, float weight) const {
  if (displaced_ml <= 0 || weight <= 0) return x;
  const double r3 = displaced_ml * 1000.0 * 3.0 / (4.0 * M_PI);  // R^3 in mm^3
  const Vec3 d{x[0] - centre[0], x[1] - centre[1], x[2] - centre[2]};
  const double rn = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
  if (rn < 1e-6) return x;
  const double ro = std::cbrt(std::max(0.0, rn * rn * rn - r3));
  const double f = 1.0 - weight * (1.0 - ro / rn);
  return {centre[0] + d[0] * f, centre[1] + d[1] * f, centre[2] + d[2] * f};
}

double MassEffect::reach(double tol) const {
  if (displaced_ml <= 0) return 0;
  const double r3 = displaced_ml * 1000.0 * 3.0 / (4.0 * M_PI);
  // displacement ~ R^3 / (3 r^2) far away
  return std::max(std::cbrt(r3) * 1.5, std::sqrt(r3 / (3 * tol)));
}

}  // namespace kdseg::synth
