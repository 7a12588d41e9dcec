// Unit tests of the synthetic generator's maths: no files, no template.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kdseg/synth/anatomy.h"
#include "kdseg/synth/case_generator.h"
#include "kdseg/synth/field.h"
#include "kdseg/synth/mr_signal.h"
#include "kdseg/synth/rng.h"
#include "kdseg/synth/tumour_growth.h"
#include "kdseg/synth/warp.h"

using namespace kdseg::synth;

TEST(SynthRng, SameSeedSameNumbersDifferentCasesDiffer) {
  Rng a(case_seed(7, 0, 3)), b(case_seed(7, 0, 3)), c(case_seed(7, 0, 4)), d(case_seed(7, 1, 3));
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
  }
  EXPECT_NE(c.next(), d.next());
  Rng u(1);
  double mean = 0, var = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double z = u.normal();
    mean += z / n;
    var += z * z / n;
  }
  EXPECT_NEAR(mean, 0, 0.03);
  EXPECT_NEAR(var, 1, 0.05);
}

TEST(SynthField, BSplineGridEvaluationMatchesPointEvaluation) {
  BSplineField f({0, 0, 0}, {40, 30, 20}, 7.0, 2);
  Rng r(3);
  f.randomize(r, 1.0);
  Grid g;
  g.dim = {21, 16, 11};
  g.spacing = 2;
  g.origin = {0.3, -0.2, 0.1};
  const Field on = f.eval_on_grid(g);
  for (int64_t k = 0; k < g.dim[2]; k += 3)
    for (int64_t j = 0; j < g.dim[1]; j += 4)
      for (int64_t i = 0; i < g.dim[0]; i += 5) {
        float v[2];
        f.eval(g.position(i, j, k), v);
        EXPECT_NEAR(v[0], on.at(g.index(i, j, k), 0), 1e-4);
        EXPECT_NEAR(v[1], on.at(g.index(i, j, k), 1), 1e-4);
      }
  // Partition of unity: constant coefficients give a constant field.
  BSplineField c({0, 0, 0}, {10, 10, 10}, 3.0, 1);
  for (auto& x : c.coeffs()) x = 2.5f;
  float v;
  c.eval({4.2, 7.7, 1.3}, &v);
  EXPECT_NEAR(v, 2.5, 1e-5);
}

TEST(SynthField, RandomFieldHasTheRequestedSpread) {
  BSplineField f({0, 0, 0}, {200, 200, 200}, 10.0, 1);
  Rng r(5);
  f.randomize(r, 2.0);
  Grid g;
  g.dim = {50, 50, 50};
  g.spacing = 4;
  const Field on = f.eval_on_grid(g);
  double s2 = 0;
  for (float x : on.v) s2 += x * x;
  EXPECT_NEAR(std::sqrt(s2 / on.v.size()), 2.0, 0.3);
}

TEST(SynthField, TrilinearSampleAndBoxDownsample) {
  Grid g;
  g.dim = {4, 4, 4};
  Field f(g, 1);
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t i = 0; i < 4; ++i)
        f.at(g.index(i, j, k)) = static_cast<float>(i + 10 * j + 100 * k);
  EXPECT_NEAR(f.sample1({1.5, 2.25, 0.5}), 1.5 + 22.5 + 50, 1e-4);
  EXPECT_EQ(f.sample1({-1, 0, 0}), 0.f);
  const Field d = downsample_box(f, 2);
  ASSERT_EQ(d.grid.dim[0], 2);
  EXPECT_NEAR(d.grid.origin[0], 0.5, 1e-9);
  EXPECT_NEAR(d.at(d.grid.index(1, 0, 1)), 2.5 + 5 + 250, 1e-4);  // means of 2,3 / 0,1 / 2,3
}

TEST(SynthField, ChamferDistanceOfABall) {
  const int64_t n = 41;
  std::vector<uint8_t> in(static_cast<size_t>(n * n * n));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < n; ++i)
        in[static_cast<size_t>((k * n + j) * n + i)] =
            (i - 20) * (i - 20) + (j - 20) * (j - 20) + (k - 20) * (k - 20) <= 15 * 15;
  const auto d = chamfer_distance({n, n, n}, 0.5, in);
  EXPECT_NEAR(d[static_cast<size_t>((20 * n + 20) * n + 20)], 16 * 0.5,
              0.8);  // chamfer: within ~8 %
  EXPECT_EQ(d[0], 0.f);
}

TEST(SynthAnatomy, MixtureFindsTwoClasses) {
  std::vector<double> h(256, 0.0);
  for (int b = 0; b < 256; ++b)
    h[static_cast<size_t>(b)] = 1000 * std::exp(-0.5 * (b - 86) * (b - 86) / 64.0) +
                                1500 * std::exp(-0.5 * (b - 116) * (b - 116) / 25.0);
  const auto mu = fit_gaussian_mixture(h, 2);
  EXPECT_NEAR(mu[0], 86, 2);
  EXPECT_NEAR(mu[1], 116, 2);
  EXPECT_EQ(wm_fraction(80, 86, 116), 0.f);
  EXPECT_NEAR(wm_fraction(101, 86, 116), 0.5, 1e-6);
}

TEST(SynthMrSignal, TissueContrastsOfTheFourSequences) {
  Sequences s;  // defaults: SPGR 20/4/30, SE 4000/100, IR 9000/120/2500
  s.flair_ti = null_inversion_time(kCsfMR.t1_ms, s.flair_tr);
  auto sig = [&](Modality m, const TissueMR& t, double gd = 0) { return mr_signal(m, s, t, gd); };
  // T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF nulled, GM > WM.
  EXPECT_GT(sig(kT1, kWmMR), sig(kT1, kGmMR));
  EXPECT_GT(sig(kT1, kGmMR), sig(kT1, kCsfMR));
  EXPECT_GT(sig(kT2, kCsfMR), sig(kT2, kGmMR));
  EXPECT_GT(sig(kT2, kGmMR), sig(kT2, kWmMR));
  EXPECT_LT(sig(kFlair, kCsfMR), 1e-9);
  EXPECT_GT(sig(kFlair, kGmMR), sig(kFlair, kWmMR));
  // Oedema (long T1 and T2) is bright on FLAIR; gadolinium brightens T1ce only.
  const TissueMR oedema{1200, 200, 0.9}, tumour{1100, 130, 0.9};
  EXPECT_GT(sig(kFlair, oedema), 1.5 * sig(kFlair, kWmMR));
  EXPECT_GT(sig(kT1ce, tumour, 0.5), 1.3 * sig(kT1ce, kWmMR));
  EXPECT_LT(sig(kT1, tumour, 0.5), sig(kT1, kWmMR));
  EXPECT_NEAR(t1_with_gadolinium(1000, 0), 1000, 1e-9);
  EXPECT_NEAR(1000.0 / t1_with_gadolinium(1000, 1), 1 + kGdRelaxivity, 1e-9);
}

namespace {
Grid cube(int64_t n, double h) {
  Grid g;
  g.dim = {n, n, n};
  g.spacing = h;
  return g;
}
double extent_along_x(const GrowthResult& r, double thr, int64_t j, int64_t k) {
  const Grid& g = r.u.grid;
  int64_t lo = g.dim[0], hi = -1;
  for (int64_t i = 0; i < g.dim[0]; ++i)
    if (r.u.v[static_cast<size_t>(g.index(i, j, k))] > thr) {
      lo = std::min(lo, i);
      hi = std::max(hi, i);
    }
  return hi < lo ? 0 : (hi - lo + 1) * g.spacing;
}
}  // namespace

TEST(SynthGrowth, FrontTravelsAtTheFisherKppSpeed) {
  const Grid g = cube(61, 2.0);
  std::vector<float> dif(static_cast<size_t>(g.n_voxels()), 1.f);
  GrowthParams p;
  p.seeds = {{60, 60, 60}};
  p.seed_delay_days = {0};
  p.rho_per_day = 0.05;
  p.infiltration_mm = 4;
  p.target_ml = 1e9;
  p.max_steps = 100;  // ~0.3 mm per step: radius ~30 mm, then ~55 mm
  GrowthResult a = grow_tumour(g, dif, p);
  p.max_steps = 180;
  GrowthResult b = grow_tumour(g, dif, p);
  const double da = extent_along_x(a, 0.5, 30, 30) / 2, db = extent_along_x(b, 0.5, 30, 30) / 2;
  const double speed = (db - da) / (b.days - a.days);
  const double expect =
      fkpp_front_speed(p.infiltration_mm * p.infiltration_mm * p.rho_per_day, p.rho_per_day);
  EXPECT_NEAR(speed / expect, 1.0, 0.2) << "front " << da << " -> " << db << " mm";
}

TEST(SynthGrowth, WhiteMatterFasterThanGreyAndNoFluxIntoCsf) {
  // Grey (0.2) for x < 40, white (1) for 40 <= x < 84, a CSF slab (0) beyond.
  const int64_t n = 100;
  Grid g = cube(n, 2.0);
  g.dim = {n, 32, 32};
  std::vector<float> dif(static_cast<size_t>(g.n_voxels()));
  for (int64_t k = 0; k < g.dim[2]; ++k)
    for (int64_t j = 0; j < g.dim[1]; ++j)
      for (int64_t i = 0; i < n; ++i)
        dif[static_cast<size_t>(g.index(i, j, k))] = i < 40 ? 0.2f : (i < 84 ? 1.f : 0.f);
  GrowthParams p;
  p.seeds = {{80, 32, 32}};  // voxel 40: the GM/WM border
  p.seed_delay_days = {0};
  p.infiltration_mm = 5;
  p.target_ml = 1e9;
  p.max_steps = 250;  // ~0.24 mm per step in WM once the front has formed
  const GrowthResult r = grow_tumour(g, dif, p);
  int64_t left = 0, right = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float u = r.u.v[static_cast<size_t>(g.index(i, 16, 16))];
    if (u > 0.1f) (i < 40 ? left : right) += 1;
  }
  EXPECT_GT(right, 3 * left / 2) << "WM extent " << right << " voxels, GM " << left;
  EXPECT_GT(left, 0);
  p.max_steps = 700;  // long enough to reach the CSF: nothing gets in
  const GrowthResult full = grow_tumour(g, dif, p);
  EXPECT_GT(full.u.v[static_cast<size_t>(g.index(83, 16, 16))], 0.5f);
  for (int64_t i = 84; i < n; ++i)
    EXPECT_EQ(full.u.v[static_cast<size_t>(g.index(i, 16, 16))], 0.f);
  EXPECT_GT(full.age_days.v[static_cast<size_t>(g.index(41, 16, 16))], 0.f);
}

TEST(SynthGrowth, StopsAtTheTargetVolume) {
  const Grid g = cube(60, 2.0);
  std::vector<float> dif(static_cast<size_t>(g.n_voxels()), 1.f);
  GrowthParams p;
  p.seeds = {{60, 60, 60}};
  p.seed_delay_days = {0};
  p.target_ml = 20;
  const GrowthResult r = grow_tumour(g, dif, p);
  EXPECT_TRUE(r.reached_target);
  EXPECT_NEAR(r.visible_ml, 20, 3);
}

TEST(SynthWarp, AffineInverseAndMassEffect) {
  Rng r(11);
  WarpParams p = random_warp_params(r);
  CaseTransform t(p, {1, 2, 3}, {-120, 120, 77}, {-240, 0, 0}, {0, 240, 155}, r);
  const Vec3 x{-100, 90, 60};
  const Vec3 back = t.inverse_affine(t.affine(x));
  for (int a = 0; a < 3; ++a) EXPECT_NEAR(back[a], x[a], 1e-9);
  EXPECT_GT(t.max_displacement(), 0);
  MassEffect m;
  m.centre = {0, 0, 0};
  m.displaced_ml = 10;
  const double r3 = 10000 * 3 / (4 * M_PI);
  const Vec3 src = m.source_of({30, 0, 0}, 1.f);
  EXPECT_NEAR(src[0] * src[0] * src[0], 30 * 30 * 30 - r3, 1e-6);  // incompressible shell
  const Vec3 fixed = m.source_of({30, 0, 0}, 0.f);                 // skull: no displacement
  EXPECT_EQ(fixed[0], 30);
  const Vec3 far = m.source_of({m.reach(0.3), 0, 0}, 1.f);
  EXPECT_NEAR(far[0], m.reach(0.3), 0.31);
}

TEST(StratifiedKinds, EveryKindAppearsAndTheRestFollowTheGenerator) {
  using V = std::vector<std::string>;
  EXPECT_EQ(stratified_kinds(0), V{});
  EXPECT_EQ(stratified_kinds(1), V{"enhancing"});
  EXPECT_EQ(stratified_kinds(2), (V{"enhancing", "non-enhancing"}));
  EXPECT_EQ(stratified_kinds(3), (V{"enhancing", "non-enhancing", "multifocal"}));
  EXPECT_EQ(stratified_kinds(4), (V{"enhancing", "non-enhancing", "multifocal", "enhancing"}));
  for (int n = 3; n <= 60; ++n) {
    const V k = stratified_kinds(n);
    ASSERT_EQ(static_cast<int>(k.size()), n);
    const auto count = [&](const char* kind) {
      return static_cast<double>(std::count(k.begin(), k.end(), kind));
    };
    EXPECT_GE(count("non-enhancing"), 1) << n;
    EXPECT_GE(count("multifocal"), 1) << n;
    // The generator's shares (0.68 / 0.2 / 0.12), within about a case.
    EXPECT_NEAR(count("enhancing"), 0.68 * n, 1.5) << n;
    EXPECT_NEAR(count("non-enhancing"), std::max(1.0, 0.2 * n), 1.0) << n;
    EXPECT_NEAR(count("multifocal"), std::max(1.0, 0.12 * n), 1.0) << n;
  }
}
