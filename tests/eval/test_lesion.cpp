// Lesion-wise Dice and HD95 (eval/lesion.h) on hand-made masks, each expected value worked out by
// hand; and on random blobs against an independent scipy implementation of the same definition
// (tests/eval/lesion_reference.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "kdseg/eval/lesion.h"
#include "kdseg/eval/metrics.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using Dim = std::array<int64_t, 3>;
using Mask = std::vector<uint8_t>;

const Dim kDim{40, 12, 12};

Mask empty_mask(const Dim& dim = kDim) {
  return Mask(static_cast<size_t>(dim[0] * dim[1] * dim[2]), 0);
}

// The half-open box [lo, hi) set to `value`.
Mask box(Mask m, const Dim& lo, const Dim& hi, uint8_t value = 1, const Dim& dim = kDim) {
  for (int64_t z = lo[2]; z < hi[2]; ++z)
    for (int64_t y = lo[1]; y < hi[1]; ++y)
      for (int64_t x = lo[0]; x < hi[0]; ++x) m[(z * dim[1] + y) * dim[0] + x] = value;
  return m;
}

// 4x4x4 = 64-voxel cubes (64 mm³ at 1 mm: above the 50 mm³ threshold), at x = x0 .. x0 + 3.
Mask cube(Mask m, int64_t x0, uint8_t value = 1) {
  return box(std::move(m), {x0, 4, 4}, {x0 + 4, 8, 8}, value);
}

LesionScores score(const Mask& pred, const Mask& ref, const LesionOptions& opt = {}) {
  return lesion_wise(pred.data(), ref.data(), kDim, {1, 1, 1}, opt);
}

TEST(LesionWise, TwoLesionsBothFound) {
  const Mask ref = cube(cube(empty_mask(), 2), 24);
  const LesionScores s = score(ref, ref);
  EXPECT_DOUBLE_EQ(s.dice, 1.0);
  EXPECT_DOUBLE_EQ(s.hd95, 0.0);
  EXPECT_EQ(s.n_tp, 2);
  EXPECT_EQ(s.n_fn, 0);
  EXPECT_EQ(s.n_fp, 0);
  ASSERT_EQ(s.lesions.size(), 2u);
  EXPECT_EQ(s.lesions[0].n_voxels, 64);
  EXPECT_DOUBLE_EQ(s.lesions[0].volume_mm3, 64.0);
}

TEST(LesionWise, MissedLesionScoresZeroAnd374) {
  const Mask ref = cube(cube(empty_mask(), 2), 24);
  const LesionScores s = score(cube(empty_mask(), 2), ref);
  EXPECT_DOUBLE_EQ(s.dice, 0.5);                    // (1 + 0) / 2
  EXPECT_DOUBLE_EQ(s.hd95, kLesionHd95Missed / 2);  // (0 + 374) / 2
  EXPECT_EQ(s.n_tp, 1);
  EXPECT_EQ(s.n_fn, 1);
  EXPECT_EQ(s.n_fp, 0);
  EXPECT_EQ(s.lesions[1].n_matched, 0);
  // Whole-volume Dice of the same masks is 2·64 / (64 + 128) = 0.667: one missed lesion of two
  // costs half the lesion-wise score.
  EXPECT_NEAR(dice(cube(empty_mask(), 2).data(), ref.data(), static_cast<int64_t>(ref.size())),
              2.0 / 3, 1e-12);
}

TEST(LesionWise, FalsePositiveAddsATerm) {
  const Mask ref = cube(cube(empty_mask(), 2), 24);
  const Mask pred = cube(ref, 33);  // both lesions, and one more far from either
  const LesionScores s = score(pred, ref);
  EXPECT_DOUBLE_EQ(s.dice, 2.0 / 3);                // (1 + 1 + 0) / 3
  EXPECT_DOUBLE_EQ(s.hd95, kLesionHd95Missed / 3);  // (0 + 0 + 374) / 3
  EXPECT_EQ(s.n_tp, 2);
  EXPECT_EQ(s.n_fp, 1);
}

TEST(LesionWise, EmptyMasks) {
  const Mask none = empty_mask(), ref = cube(empty_mask(), 2);
  LesionScores s = score(none, none);  // both empty: nothing to find, nothing found
  EXPECT_DOUBLE_EQ(s.dice, 1.0);
  EXPECT_DOUBLE_EQ(s.hd95, 0.0);
  EXPECT_EQ(s.n_tp + s.n_fn + s.n_fp, 0);
  s = score(none, ref);  // a missed lesion
  EXPECT_DOUBLE_EQ(s.dice, 0.0);
  EXPECT_DOUBLE_EQ(s.hd95, kLesionHd95Missed);
  EXPECT_EQ(s.n_fn, 1);
  s = score(ref, none);  // a false positive
  EXPECT_DOUBLE_EQ(s.dice, 0.0);
  EXPECT_DOUBLE_EQ(s.hd95, kLesionHd95Missed);
  EXPECT_EQ(s.n_fp, 1);
}

TEST(LesionWise, NearbyReferenceComponentsAreOneLesion) {
  // Two cubes 3 voxels apart (x 2..5 and 9..12): their dilations by 3 meet, so BraTS-GLI counts
  // them as one lesion; without dilation they are two.
  const Mask ref = box(box(empty_mask(), {2, 4, 4}, {6, 8, 8}), {9, 4, 4}, {13, 8, 8});
  const Mask pred = box(empty_mask(), {2, 4, 4}, {6, 8, 8});  // only the first cube
  LesionScores s = score(pred, ref);
  ASSERT_EQ(s.lesions.size(), 1u);
  EXPECT_EQ(s.lesions[0].n_voxels, 128);
  EXPECT_DOUBLE_EQ(s.dice, 2.0 * 64 / (64 + 128));
  EXPECT_EQ(s.n_tp, 1);
  EXPECT_EQ(s.n_fn, 0);
  LesionOptions no_join;
  no_join.dilation = 0;
  s = score(pred, ref, no_join);
  ASSERT_EQ(s.lesions.size(), 2u);
  EXPECT_DOUBLE_EQ(s.dice, 0.5);
  EXPECT_EQ(s.n_fn, 1);
  // Seven voxels apart (x 2..5 and 13..16), dilations of 3 do not meet: two lesions.
  const Mask apart = box(box(empty_mask(), {2, 4, 4}, {6, 8, 8}), {13, 4, 4}, {17, 8, 8});
  EXPECT_EQ(score(pred, apart).lesions.size(), 2u);
}

TEST(LesionWise, PredictionNearALesionMatchesIt) {
  // A predicted cube 2 voxels off the lesion (no overlap) meets its dilation: a poor match, not a
  // false positive and a miss.
  const Mask ref = cube(empty_mask(), 10);
  const Mask pred = cube(empty_mask(), 16);  // x 16..19 against 10..13
  LesionScores s = score(pred, ref);
  EXPECT_EQ(s.n_tp, 1);
  EXPECT_EQ(s.n_fp, 0);
  EXPECT_DOUBLE_EQ(s.dice, 0.0);
  EXPECT_GT(s.hd95, 0.0);
  EXPECT_LT(s.hd95, 10.0);
  LesionOptions strict;
  strict.dilation = 0;  // matching by overlap only: a miss and a false positive
  s = score(pred, ref, strict);
  EXPECT_EQ(s.n_fn, 1);
  EXPECT_EQ(s.n_fp, 1);
  EXPECT_DOUBLE_EQ(s.hd95, kLesionHd95Missed);
}

TEST(LesionWise, OneComponentOverTwoLesionsCountsForBoth) {
  // A bar from x 2 to 27 covers both lesions: it matches each, and each lesion's Dice compares
  // it with the whole bar (2·64 / (64 + 26·16)), as the challenge's code does.
  const Mask ref = cube(cube(empty_mask(), 2), 24);
  const Mask pred = box(empty_mask(), {2, 4, 4}, {28, 8, 8});
  const LesionScores s = score(pred, ref);
  EXPECT_EQ(s.n_tp, 2);
  EXPECT_EQ(s.n_fp, 0);
  EXPECT_NEAR(s.dice, 2.0 * 64 / (64 + 26 * 16), 1e-12);
  EXPECT_EQ(s.lesions[0].n_matched, 1);
  EXPECT_EQ(s.lesions[1].n_matched, 1);
}

TEST(LesionWise, SeveralComponentsOfOneLesionAreJoinedForItsScore) {
  // The lesion predicted as two halves with a gap: both halves match, Dice of their union.
  const Mask ref = box(empty_mask(), {2, 4, 4}, {10, 8, 8});  // 8x4x4 = 128
  const Mask pred = box(box(empty_mask(), {2, 4, 4}, {5, 8, 8}), {7, 4, 4}, {10, 8, 8});  // 96
  const LesionScores s = score(pred, ref);
  EXPECT_EQ(s.lesions[0].n_matched, 2);
  EXPECT_EQ(s.n_fp, 0);
  EXPECT_NEAR(s.dice, 2.0 * 96 / (96 + 128), 1e-12);
}

TEST(LesionWise, SmallLesionsAreLeftOutButNotFalsePositives) {
  // A 64-voxel lesion and an 8-voxel one (8 mm³ <= 50 mm³).
  const Mask ref = box(cube(empty_mask(), 2), {30, 4, 4}, {32, 6, 6});
  LesionScores s = score(cube(empty_mask(), 2), ref);  // the small one missed: not counted
  EXPECT_DOUBLE_EQ(s.dice, 1.0);
  EXPECT_EQ(s.n_small, 1);
  EXPECT_EQ(s.n_fn, 0);
  EXPECT_FALSE(s.lesions[1].kept);
  s = score(ref, ref);  // the small one found: not a false positive either
  EXPECT_DOUBLE_EQ(s.dice, 1.0);
  EXPECT_EQ(s.n_fp, 0);
  EXPECT_EQ(s.n_tp, 1);
  LesionOptions all;
  all.min_volume_mm3 = 0;  // every lesion counts
  s = score(cube(empty_mask(), 2), ref, all);
  EXPECT_DOUBLE_EQ(s.dice, 0.5);
  EXPECT_EQ(s.n_fn, 1);
  // The threshold is a volume: at 2 mm the same 8 voxels are 64 mm³, above 50.
  s = lesion_wise(cube(empty_mask(), 2).data(), ref.data(), kDim, {2, 2, 2});
  EXPECT_EQ(s.n_small, 0);
  EXPECT_EQ(s.n_fn, 1);
  // Exactly at the threshold is left out (the challenge keeps volumes > threshold): 50 voxels.
  const Mask fifty = box(empty_mask(), {2, 2, 2}, {7, 7, 4});  // 5x5x2
  EXPECT_EQ(score(empty_mask(), fifty).n_small, 1);
  all.min_volume_mm3 = 49.5;
  EXPECT_EQ(score(empty_mask(), fifty, all).n_fn, 1);
}

TEST(LesionWise, RejectsBadOptions) {
  const Mask m = empty_mask();
  LesionOptions o;
  o.dilation = -1;
  EXPECT_THROW(score(m, m, o), Error);
  o = {};
  o.min_volume_mm3 = -1;
  EXPECT_THROW(score(m, m, o), Error);
  EXPECT_THROW(lesion_wise(m.data(), m.data(), kDim, {0, 1, 1}), Error);
}

TEST(LesionParts, ComponentsAre26Connected) {
  const Dim d{6, 6, 6};
  Mask m = empty_mask(d);
  m[(1 * 6 + 1) * 6 + 1] = 1;  // (1, 1, 1)
  m[(2 * 6 + 2) * 6 + 2] = 1;  // (2, 2, 2): corner neighbour, same component
  m[(4 * 6 + 4) * 6 + 5] = 1;  // (5, 4, 4): apart
  int32_t n = 0;
  const auto cc = connected_components(m.data(), d, &n);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(cc[(1 * 6 + 1) * 6 + 1], 1);
  EXPECT_EQ(cc[(2 * 6 + 2) * 6 + 2], 1);
  EXPECT_EQ(cc[(4 * 6 + 4) * 6 + 5], 2);
}

TEST(LesionParts, DilationIsThe18NeighbourhoodIterated) {
  const Dim d{11, 11, 11};
  Mask m = empty_mask(d);
  const int64_t centre = (5 * 11 + 5) * 11 + 5;
  m[centre] = 1;
  auto count = [](const Mask& x) { return std::count(x.begin(), x.end(), 1); };
  EXPECT_EQ(count(dilate18(m.data(), d, 0)), 1);
  const Mask one = dilate18(m.data(), d, 1);
  EXPECT_EQ(count(one), 19);  // the cube without its 8 corners
  EXPECT_EQ(one[(4 * 11 + 4) * 11 + 4], 0);
  EXPECT_EQ(one[(4 * 11 + 4) * 11 + 5], 1);
  // Three times: offsets with max |d| <= 3 and |dx| + |dy| + |dz| <= 6, 263 of the 343.
  EXPECT_EQ(count(dilate18(m.data(), d, 3)), 263);
  // Cut at the grid: a corner voxel dilated once keeps its 7 in-grid 18-neighbours and itself.
  Mask c = empty_mask(d);
  c[0] = 1;
  EXPECT_EQ(count(dilate18(c.data(), d, 1)), 7);
}

TEST(LesionCase, RegionsFromLabelMaps) {
  // Reference: oedema cube with an enhancing core; prediction: the same oedema, ET missed and an
  // enhancing false positive elsewhere.
  Mask ref = box(empty_mask(), {2, 2, 2}, {10, 10, 10}, 2);
  ref = box(std::move(ref), {4, 4, 4}, {8, 8, 8}, 4);
  Mask pred = box(empty_mask(), {2, 2, 2}, {10, 10, 10}, 2);
  pred = box(std::move(pred), {30, 4, 4}, {34, 8, 8}, 4);
  const CaseLesionMetrics cm = score_case_lesion_wise(pred.data(), ref.data(), kDim, {1, 1, 1});
  const LesionScores &et = cm.regions[0], &wt = cm.regions[1], &tc = cm.regions[2];
  EXPECT_EQ(et.n_fn, 1);
  EXPECT_EQ(et.n_fp, 1);
  EXPECT_DOUBLE_EQ(et.dice, 0.0);
  EXPECT_DOUBLE_EQ(et.hd95, kLesionHd95Missed);
  EXPECT_EQ(wt.n_tp, 1);
  EXPECT_EQ(wt.n_fp, 1);           // the false ET is tumour too
  EXPECT_DOUBLE_EQ(wt.dice, 0.5);  // (1 + 0) / 2
  EXPECT_EQ(tc.n_fn, 1);
  EXPECT_EQ(tc.n_fp, 1);
  const auto cols = lesion_metric_columns();
  const auto v = cm.values();
  ASSERT_EQ(cols.size(), 15u);
  ASSERT_EQ(v.size(), cols.size());
  EXPECT_EQ(cols[0], "lw_dice_et");
  EXPECT_EQ(cols[4], "lw_hd95_wt");
  EXPECT_EQ(cols[14], "lw_fp_tc");
  EXPECT_DOUBLE_EQ(v[1], 0.5);  // lw_dice_wt
  EXPECT_DOUBLE_EQ(v[14], 1);   // lw_fp_tc
  Mask bad = ref;
  bad[0] = 3;  // not an internal label
  EXPECT_THROW(score_case_lesion_wise(pred.data(), bad.data(), kDim, {1, 1, 1}), Error);
}

// ---------------------------------------------------------------- against scipy

// Random blobs: balls of radius 1-4 voxels; the prediction keeps most, shifts some, adds others.
void random_case(std::mt19937& rng, const Dim& d, Mask& pred, Mask& ref) {
  pred = empty_mask(d);
  ref = empty_mask(d);
  std::uniform_real_distribution<double> u(0, 1);
  auto ball = [&](Mask& m, double cx, double cy, double cz, double r) {
    for (int64_t z = 0; z < d[2]; ++z)
      for (int64_t y = 0; y < d[1]; ++y)
        for (int64_t x = 0; x < d[0]; ++x)
          if ((x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz) <= r * r)
            m[(z * d[1] + y) * d[0] + x] = 1;
  };
  const int n = 1 + static_cast<int>(u(rng) * 6);
  for (int i = 0; i < n; ++i) {
    const double cx = u(rng) * d[0], cy = u(rng) * d[1], cz = u(rng) * d[2];
    const double r = 1 + u(rng) * 3;
    ball(ref, cx, cy, cz, r);
    const double p = u(rng);
    if (p < 0.6)
      ball(pred, cx + u(rng) * 2 - 1, cy + u(rng) * 2 - 1, cz, r * (0.7 + 0.6 * u(rng)));
    else if (p < 0.8)
      ball(pred, u(rng) * d[0], u(rng) * d[1], u(rng) * d[2], 1 + u(rng) * 2);
  }
}

TEST(LesionWise, AgreesWithAnIndependentScipyImplementation) {
  const std::string py = KDSEG_SYSTEM_PYTHON;
  if (test::run_command(py + " -c 'import scipy.ndimage, numpy'").exit_code != 0)
    GTEST_SKIP() << "python3-scipy not installed (python3-nibabel, in scripts/setup.sh, brings it)";
  test::ScratchDir dir("lesion_scipy");
  const Dim d{30, 26, 18};
  const std::array<double, 3> spacing{1.0, 1.2, 2.0};
  std::mt19937 rng(7);
  const int n_cases = 24;
  std::vector<LesionScores> ours;
  for (int c = 0; c < n_cases; ++c) {
    Mask pred, ref;
    random_case(rng, d, pred, ref);
    LesionOptions opt;
    opt.dilation = c % 3 == 2 ? 1 : 3;
    opt.min_volume_mm3 = c % 2 ? 20 : 50;
    ours.push_back(lesion_wise(pred.data(), ref.data(), d, spacing, opt));
    std::ofstream(dir.str("case" + std::to_string(c) + ".bin"), std::ios::binary)
        .write(reinterpret_cast<const char*>(pred.data()),
               static_cast<std::streamsize>(pred.size()))
        .write(reinterpret_cast<const char*>(ref.data()), static_cast<std::streamsize>(ref.size()));
  }
  const std::string script = std::string(KDSEG_SOURCE_DIR) + "/tests/eval/lesion_reference.py";
  const auto r = test::run_command(py + " " + script + " " + dir.str() + " " +
                                   std::to_string(n_cases) + " 30 26 18 1.0 1.2 2.0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto theirs = nlohmann::json::parse(r.output);
  ASSERT_EQ(theirs.size(), static_cast<size_t>(n_cases));
  int with_fp = 0, with_fn = 0, with_small = 0;
  for (int c = 0; c < n_cases; ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    const auto& t = theirs[c];
    EXPECT_EQ(ours[c].n_tp, t["tp"].get<int>());
    EXPECT_EQ(ours[c].n_fn, t["fn"].get<int>());
    EXPECT_EQ(ours[c].n_fp, t["fp"].get<int>());
    EXPECT_EQ(ours[c].n_small, t["small"].get<int>());
    EXPECT_NEAR(ours[c].dice, t["dice"].get<double>(), 1e-9);
    EXPECT_NEAR(ours[c].hd95, t["hd95"].get<double>(), 1e-6);
    with_fp += ours[c].n_fp > 0;
    with_fn += ours[c].n_fn > 0;
    with_small += ours[c].n_small > 0;
  }
  // The random cases exercise every rule.
  EXPECT_GT(with_fp, 0);
  EXPECT_GT(with_fn, 0);
  EXPECT_GT(with_small, 0);
}

}  // namespace
}  // namespace kdseg
