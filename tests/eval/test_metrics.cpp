// BraTS metrics on tiny masks made in code, every expected value worked out by hand (or, for HD95
// on random masks, by the definition: all pairs of boundary voxels).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kdseg/eval/metrics.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

using Dim = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;
using Mask = std::vector<uint8_t>;

int64_t index_of(const Dim& dim, int64_t x, int64_t y, int64_t z) {
  return (z * dim[1] + y) * dim[0] + x;
}

// The half-open box [lo, hi) set to `value` in a grid of `dim`.
Mask box(const Dim& dim, const Dim& lo, const Dim& hi, uint8_t value = 1, Mask m = {}) {
  if (m.empty()) m.assign(static_cast<size_t>(dim[0] * dim[1] * dim[2]), 0);
  for (int64_t z = lo[2]; z < hi[2]; ++z)
    for (int64_t y = lo[1]; y < hi[1]; ++y)
      for (int64_t x = lo[0]; x < hi[0]; ++x) m[index_of(dim, x, y, z)] = value;
  return m;
}

Mask empty_mask(const Dim& dim) {
  return Mask(static_cast<size_t>(dim[0] * dim[1] * dim[2]), 0);
}

int64_t count(const Mask& m) {
  return std::count_if(m.begin(), m.end(), [](uint8_t v) { return v; });
}

// ---------------------------------------------------------------- regions

TEST(MetricRegions, NestedRegionsFromLabels) {
  const std::vector<uint8_t> labels{0, 1, 2, 4, 4, 2};
  EXPECT_EQ(region_mask(labels.data(), 6, Region::ET), (Mask{0, 0, 0, 1, 1, 0}));
  EXPECT_EQ(region_mask(labels.data(), 6, Region::WT), (Mask{0, 1, 1, 1, 1, 1}));
  EXPECT_EQ(region_mask(labels.data(), 6, Region::TC), (Mask{0, 1, 0, 1, 1, 0}));
  EXPECT_STREQ(region_name(Region::ET), "ET");
  EXPECT_STREQ(region_name(Region::WT), "WT");
  EXPECT_STREQ(region_name(Region::TC), "TC");
  EXPECT_EQ(kRegions[0], Region::ET);
  EXPECT_EQ(kRegions[1], Region::WT);
  EXPECT_EQ(kRegions[2], Region::TC);
}

TEST(MetricRegions, RejectsLabelOutsideConvention) {
  const std::vector<uint8_t> labels{0, 1, 3, 4};  // 3: BraTS 2023's ET, not converted
  try {
    region_mask(labels.data(), 4, Region::WT);
    FAIL() << "label 3 accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.problem().find("voxel 2"), std::string::npos) << e.what();
    EXPECT_NE(e.problem().find("label 3"), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
}

// ---------------------------------------------------------------- overlap metrics

TEST(MetricOverlap, HandComputedBoxes) {
  // 8×8×8 grid (512 voxels). Pred: x 0..3, y 0..3, z 0..1 = 32 voxels; ref: x 2..5, same y, z
  // = 32 voxels; overlap x 2..3 = 16 voxels.
  const Dim dim{8, 8, 8};
  const Mask pred = box(dim, {0, 0, 0}, {4, 4, 2});
  const Mask ref = box(dim, {2, 0, 0}, {6, 4, 2});
  const Confusion c = confusion(pred.data(), ref.data(), 512);
  EXPECT_EQ(c.tp, 16);
  EXPECT_EQ(c.fp, 16);
  EXPECT_EQ(c.fn, 16);
  EXPECT_EQ(c.tn, 464);
  EXPECT_DOUBLE_EQ(dice(pred.data(), ref.data(), 512), 0.5);         // 2·16 / 64
  EXPECT_DOUBLE_EQ(sensitivity(pred.data(), ref.data(), 512), 0.5);  // 16 / 32
  EXPECT_DOUBLE_EQ(specificity(pred.data(), ref.data(), 512), 464.0 / 480.0);
  // 32 voxels of 1·2·3 mm³ = 192 mm³.
  EXPECT_DOUBLE_EQ(volume_ml(pred.data(), 512, {1, 2, 3}), 0.192);
}

TEST(MetricOverlap, UnequalSizes) {
  // Pred 2 voxels inside a ref of 6: Dice 2·2 / 8, sensitivity 2/6, specificity 1.
  const Dim dim{4, 4, 4};
  const Mask ref = box(dim, {0, 0, 0}, {3, 2, 1});
  const Mask pred = box(dim, {0, 0, 0}, {2, 1, 1});
  EXPECT_DOUBLE_EQ(dice(pred.data(), ref.data(), 64), 0.5);
  EXPECT_DOUBLE_EQ(sensitivity(pred.data(), ref.data(), 64), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(specificity(pred.data(), ref.data(), 64), 1.0);
}

TEST(MetricOverlap, EmptyMaskRules) {
  const Dim dim{4, 4, 4};
  const Mask none = empty_mask(dim);
  const Mask some = box(dim, {1, 1, 1}, {3, 3, 2});  // 4 voxels
  // Both empty: perfect, sensitivity undefined.
  EXPECT_EQ(dice(none.data(), none.data(), 64), 1.0);
  EXPECT_TRUE(std::isnan(sensitivity(none.data(), none.data(), 64)));
  EXPECT_EQ(specificity(none.data(), none.data(), 64), 1.0);
  // Missed lesion: Dice 0, sensitivity 0.
  EXPECT_EQ(dice(none.data(), some.data(), 64), 0.0);
  EXPECT_EQ(sensitivity(none.data(), some.data(), 64), 0.0);
  EXPECT_EQ(specificity(none.data(), some.data(), 64), 1.0);
  // False positive on an empty reference: Dice 0, sensitivity undefined, 4 of 64 negatives lost.
  EXPECT_EQ(dice(some.data(), none.data(), 64), 0.0);
  EXPECT_TRUE(std::isnan(sensitivity(some.data(), none.data(), 64)));
  EXPECT_DOUBLE_EQ(specificity(some.data(), none.data(), 64), 60.0 / 64.0);
  // Reference covering the grid: no negatives, specificity undefined.
  const Mask all(64, 1);
  EXPECT_TRUE(std::isnan(specificity(some.data(), all.data(), 64)));
}

// ---------------------------------------------------------------- surface distance

TEST(MetricBoundary, FaceNeighboursAndGridEdge) {
  // A 3×3×3 block inside a 5³ grid: all but the centre voxel are boundary.
  const Dim dim{5, 5, 5};
  const Mask block = box(dim, {1, 1, 1}, {4, 4, 4});
  const Mask b = boundary_mask(block.data(), dim);
  EXPECT_EQ(count(b), 26);
  EXPECT_EQ(b[index_of(dim, 2, 2, 2)], 0);
  // The whole 4³ grid: the grid faces are boundary, the 2³ core is not.
  const Dim d4{4, 4, 4};
  const Mask full(64, 1);
  EXPECT_EQ(count(boundary_mask(full.data(), d4)), 64 - 8);
  // 6-connectivity: a voxel with only diagonal neighbours outside is interior.
  const Mask big = box(dim, {0, 0, 0}, {5, 5, 5});
  const Mask nb = boundary_mask(box(dim, {0, 0, 0}, {1, 1, 1}, 0, big).data(), dim);
  EXPECT_EQ(nb[index_of(dim, 1, 1, 1)], 0);
}

TEST(Hd95, SingleVoxelsAnisotropic) {
  const Dim dim{8, 8, 8};
  const Spacing sp{1, 2, 3};
  Mask a = empty_mask(dim), b = empty_mask(dim);
  a[index_of(dim, 3, 3, 2)] = 1;
  b[index_of(dim, 3, 3, 4)] = 1;  // 2 voxels along z, 3 mm each
  EXPECT_DOUBLE_EQ(hd95(a.data(), b.data(), dim, sp), 6.0);
  b = empty_mask(dim);
  b[index_of(dim, 6, 7, 4)] = 1;  // (3, 4, 2) voxels: 3 mm, 8 mm, 6 mm
  EXPECT_DOUBLE_EQ(hd95(a.data(), b.data(), dim, sp), std::sqrt(9.0 + 64.0 + 36.0));
  EXPECT_EQ(hd95(a.data(), a.data(), dim, sp), 0.0);
}

TEST(Hd95, ShiftedCube) {
  // 4³ cube at [2, 6)³ in 16³ and the same shifted by one voxel along x. Of A's 56 boundary
  // voxels, 36 are also boundary of B (on the shared y/z faces), the 16 of A's x = 2 face are one
  // step from B's x = 3 face, and the 4 of A's x = 5 face that are not on a y/z face are interior
  // in B, one step from B's faces.
  const Dim dim{16, 16, 16};
  const Mask a = box(dim, {2, 2, 2}, {6, 6, 6});
  const Mask b = box(dim, {3, 2, 2}, {7, 6, 6});
  {
    std::vector<double> d = boundary_distances(a.data(), b.data(), dim, {1, 1, 1});
    ASSERT_EQ(d.size(), 56u);
    EXPECT_EQ(std::count(d.begin(), d.end(), 0.0), 36);
    EXPECT_EQ(std::count(d.begin(), d.end(), 1.0), 20);
    EXPECT_DOUBLE_EQ(hd95(a.data(), b.data(), dim, {1, 1, 1}), 1.0);
  }
  {
    // 2 mm along x: the x = 2 face is now 2 mm away, the 4 interior voxels are 1 mm from B's
    // y/z faces. Sorted: 36 × 0, 4 × 1, 16 × 2; rank 55 · 0.95 = 52.25 falls in the 2s.
    std::vector<double> d = boundary_distances(a.data(), b.data(), dim, {2, 1, 1});
    EXPECT_EQ(std::count(d.begin(), d.end(), 0.0), 36);
    EXPECT_EQ(std::count(d.begin(), d.end(), 1.0), 4);
    EXPECT_EQ(std::count(d.begin(), d.end(), 2.0), 16);
    EXPECT_DOUBLE_EQ(hd95(a.data(), b.data(), dim, {2, 1, 1}), 2.0);
  }
}

TEST(Hd95, InterpolatesPercentileAndTakesLargerDirection) {
  // A: a line of 11 voxels along x; B: its first voxel. A→B: 0, 0.5, ..., 5 mm (spacing 0.5);
  // rank 10 · 0.95 = 9.5 -> 4.75 mm. B→A: 0. HD95 = max = 4.75, whichever is the prediction.
  const Dim dim{16, 5, 5};
  const Spacing sp{0.5, 1, 1};
  const Mask a = box(dim, {2, 2, 2}, {13, 3, 3});
  const Mask b = box(dim, {2, 2, 2}, {3, 3, 3});
  EXPECT_DOUBLE_EQ(hd95(a.data(), b.data(), dim, sp), 4.75);
  EXPECT_DOUBLE_EQ(hd95(b.data(), a.data(), dim, sp), 4.75);
  const std::vector<double> ba = boundary_distances(b.data(), a.data(), dim, sp);
  EXPECT_EQ(ba, std::vector<double>{0.0});
}

TEST(Hd95, EmptyMaskRules) {
  const Dim dim{6, 6, 6};
  const Mask none = empty_mask(dim);
  const Mask some = box(dim, {1, 1, 1}, {3, 3, 3});
  EXPECT_EQ(hd95(none.data(), none.data(), dim, {1, 1, 1}), 0.0);
  EXPECT_EQ(hd95(some.data(), none.data(), dim, {1, 1, 1}), kHd95Empty);
  EXPECT_EQ(hd95(none.data(), some.data(), dim, {1, 1, 1}), kHd95Empty);
  EXPECT_NEAR(kHd95Empty, std::sqrt(240.0 * 240 + 240.0 * 240 + 155.0 * 155), 1e-5);
  EXPECT_TRUE(boundary_distances(none.data(), some.data(), dim, {1, 1, 1}).empty());
  for (double d : boundary_distances(some.data(), none.data(), dim, {1, 1, 1}))
    EXPECT_TRUE(std::isinf(d));
}

// HD95 by its definition: boundary voxels by neighbour lookup, every pair of them, then numpy's
// linear percentile written out again here.
double brute_force_hd95(const Mask& a, const Mask& b, const Dim& dim, const Spacing& sp) {
  auto boundary_points = [&](const Mask& m) {
    std::vector<std::array<double, 3>> pts;
    auto in = [&](int64_t x, int64_t y, int64_t z) {
      return x >= 0 && y >= 0 && z >= 0 && x < dim[0] && y < dim[1] && z < dim[2] &&
             m[index_of(dim, x, y, z)];
    };
    for (int64_t z = 0; z < dim[2]; ++z)
      for (int64_t y = 0; y < dim[1]; ++y)
        for (int64_t x = 0; x < dim[0]; ++x)
          if (in(x, y, z) && !(in(x - 1, y, z) && in(x + 1, y, z) && in(x, y - 1, z) &&
                               in(x, y + 1, z) && in(x, y, z - 1) && in(x, y, z + 1)))
            pts.push_back({x * sp[0], y * sp[1], z * sp[2]});
    return pts;
  };
  auto directed_p95 = [](const std::vector<std::array<double, 3>>& from,
                         const std::vector<std::array<double, 3>>& to) {
    std::vector<double> d;
    for (const auto& p : from) {
      double best = std::numeric_limits<double>::infinity();
      for (const auto& q : to)
        best =
            std::min(best, std::sqrt((p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1]) +
                                     (p[2] - q[2]) * (p[2] - q[2])));
      d.push_back(best);
    }
    std::sort(d.begin(), d.end());
    const double rank = (d.size() - 1) * 0.95;
    const size_t lo = static_cast<size_t>(rank);
    const size_t hi = std::min(lo + 1, d.size() - 1);
    return d[lo] + (d[hi] - d[lo]) * (rank - lo);
  };
  const auto pa = boundary_points(a), pb = boundary_points(b);
  return std::max(directed_p95(pa, pb), directed_p95(pb, pa));
}

TEST(Hd95, MatchesBruteForceOnRandomBlobs) {
  // Unions of random boxes, some touching the grid faces, with anisotropic spacing: checks the
  // bounding-box crop, the boundary rule at the grid edge and the EDT together.
  const Dim dim{14, 12, 10};
  const Spacing sp{0.8, 1.1, 2.4};
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
    std::mt19937 rng(seed);
    auto blob = [&]() {
      Mask m = empty_mask(dim);
      std::uniform_int_distribution<int> n_boxes(1, 3);
      for (int k = n_boxes(rng); k > 0; --k) {
        Dim lo, hi;
        for (int a = 0; a < 3; ++a) {
          std::uniform_int_distribution<int64_t> p(0, dim[a] - 1);
          int64_t u = p(rng), v = p(rng);
          lo[a] = std::min(u, v);
          hi[a] = std::max(u, v) + 1;
        }
        m = box(dim, lo, hi, 1, m);
      }
      return m;
    };
    const Mask a = blob(), b = blob();
    EXPECT_NEAR(hd95(a.data(), b.data(), dim, sp), brute_force_hd95(a, b, dim, sp), 1e-9)
        << "seed " << seed;
  }
}

// ---------------------------------------------------------------- per-case scoring

TEST(MetricColumns, NamesMatchValues) {
  const std::vector<std::string> cols = metric_columns();
  const std::vector<std::string> want{
      "dice_et",       "dice_wt",       "dice_tc",        "hd95_et",        "hd95_wt",
      "hd95_tc",       "sens_et",       "sens_wt",        "sens_tc",        "spec_et",
      "spec_wt",       "spec_tc",       "vol_pred_et_ml", "vol_pred_wt_ml", "vol_pred_tc_ml",
      "vol_ref_et_ml", "vol_ref_wt_ml", "vol_ref_tc_ml"};
  EXPECT_EQ(cols, want);

  // Distinct values: 10·metric + region, so the position of each value is checked.
  CaseMetrics cm;
  for (int r = 0; r < kNumRegions; ++r) {
    RegionMetrics& m = cm.regions[r];
    m.dice = 0 + r;
    m.hd95 = 10 + r;
    m.sensitivity = 20 + r;
    m.specificity = 30 + r;
    m.volume_pred_ml = 40 + r;
    m.volume_ref_ml = 50 + r;
  }
  const std::vector<double> v = cm.values();
  ASSERT_EQ(v.size(), cols.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], 10.0 * (i / 3) + i % 3) << cols[i];
}

// A layered tumour on 16³: oedema (2) shell, core (1), enhancing (4) centre.
Mask layered_tumour(const Dim& dim) {
  Mask m = box(dim, {3, 3, 3}, {11, 11, 11}, 2);  // 512 voxels
  m = box(dim, {5, 5, 5}, {9, 9, 9}, 1, m);       // 64
  m = box(dim, {6, 6, 6}, {8, 8, 8}, 4, m);       // 8
  return m;
}

TEST(MetricCase, MissedEnhancingTumour) {
  // The prediction calls the enhancing centre necrotic core: WT and TC are perfect, ET is missed.
  const Dim dim{16, 16, 16};
  const Spacing sp{1, 1, 2};  // 2 mm³ voxels
  const Mask ref = layered_tumour(dim);
  Mask pred = ref;
  std::replace(pred.begin(), pred.end(), uint8_t{4}, uint8_t{1});

  const CaseMetrics cm = score_case(pred.data(), ref.data(), dim, sp);
  const RegionMetrics& et = cm[Region::ET];
  EXPECT_EQ(et.dice, 0.0);
  EXPECT_EQ(et.hd95, kHd95Empty);
  EXPECT_EQ(et.sensitivity, 0.0);
  EXPECT_EQ(et.specificity, 1.0);
  EXPECT_EQ(et.volume_pred_ml, 0.0);
  EXPECT_DOUBLE_EQ(et.volume_ref_ml, 8 * 2 / 1000.0);
  for (Region r : {Region::WT, Region::TC}) {
    EXPECT_EQ(cm[r].dice, 1.0) << region_name(r);
    EXPECT_EQ(cm[r].hd95, 0.0) << region_name(r);
    EXPECT_EQ(cm[r].sensitivity, 1.0) << region_name(r);
    EXPECT_EQ(cm[r].specificity, 1.0) << region_name(r);
  }
  EXPECT_DOUBLE_EQ(cm[Region::WT].volume_pred_ml, 512 * 2 / 1000.0);
  EXPECT_DOUBLE_EQ(cm[Region::TC].volume_ref_ml, 64 * 2 / 1000.0);
}

TEST(MetricCase, ShiftedPrediction) {
  // The whole tumour one voxel along x: each region is a shifted cube, Dice = 2(s-1)/2s per side s.
  const Dim dim{16, 16, 16};
  const Mask ref = layered_tumour(dim);
  Mask pred = empty_mask(dim);
  for (int64_t z = 0; z < 16; ++z)
    for (int64_t y = 0; y < 16; ++y)
      for (int64_t x = 1; x < 16; ++x)
        pred[index_of(dim, x, y, z)] = ref[index_of(dim, x - 1, y, z)];
  const CaseMetrics cm = score_case(pred.data(), ref.data(), dim, {1, 1, 1});
  EXPECT_DOUBLE_EQ(cm[Region::WT].dice, 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(cm[Region::TC].dice, 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(cm[Region::ET].dice, 1.0 / 2.0);
  EXPECT_DOUBLE_EQ(cm[Region::WT].sensitivity, 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(cm[Region::WT].specificity, (4096.0 - 512 - 64) / (4096.0 - 512));
  for (Region r : kRegions) EXPECT_DOUBLE_EQ(cm[r].hd95, 1.0) << region_name(r);
}

TEST(MetricCase, EmptyPredictionAndReference) {
  const Dim dim{8, 8, 8};
  const Mask none = empty_mask(dim);
  const CaseMetrics cm = score_case(none.data(), none.data(), dim, {1, 1, 1});
  for (Region r : kRegions) {
    EXPECT_EQ(cm[r].dice, 1.0);
    EXPECT_EQ(cm[r].hd95, 0.0);
    EXPECT_TRUE(std::isnan(cm[r].sensitivity));
    EXPECT_EQ(cm[r].specificity, 1.0);
    EXPECT_EQ(cm[r].volume_pred_ml, 0.0);
    EXPECT_EQ(cm[r].volume_ref_ml, 0.0);
  }
}

TEST(MetricCase, CropMatchesWholeGridScoring) {
  // score_case scores on the box around both tumours; region by region on the whole grid must
  // give the same numbers. Random label boxes, some on the grid faces, some regions empty.
  const Dim dim{15, 13, 11};
  const Spacing sp{0.9, 1.2, 2.0};
  const int64_t n = 15 * 13 * 11;
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u}) {
    std::mt19937 rng(seed);
    auto labels = [&]() {
      Mask m = empty_mask(dim);
      std::uniform_int_distribution<int> n_boxes(0, 3), label(0, 3);
      const uint8_t kLabels[] = {1, 2, 4, 2};
      for (int k = n_boxes(rng); k > 0; --k) {
        Dim lo, hi;
        for (int a = 0; a < 3; ++a) {
          std::uniform_int_distribution<int64_t> p(0, dim[a] - 1);
          const int64_t u = p(rng), v = p(rng);
          lo[a] = std::min(u, v);
          hi[a] = std::max(u, v) + 1;
        }
        m = box(dim, lo, hi, kLabels[label(rng)], m);
      }
      return m;
    };
    const Mask pred = labels(), ref = labels();
    const CaseMetrics cm = score_case(pred.data(), ref.data(), dim, sp);
    for (Region r : kRegions) {
      const Mask p = region_mask(pred.data(), n, r), q = region_mask(ref.data(), n, r);
      const RegionMetrics want = score_region(p.data(), q.data(), dim, sp);
      const RegionMetrics& got = cm[r];
      const std::string where = "seed " + std::to_string(seed) + " " + region_name(r);
      EXPECT_DOUBLE_EQ(got.dice, want.dice) << where;
      EXPECT_DOUBLE_EQ(got.hd95, want.hd95) << where;
      EXPECT_EQ(std::isnan(got.sensitivity), std::isnan(want.sensitivity)) << where;
      if (!std::isnan(want.sensitivity)) {
        EXPECT_DOUBLE_EQ(got.sensitivity, want.sensitivity) << where;
      }
      EXPECT_DOUBLE_EQ(got.specificity, want.specificity) << where;
      EXPECT_DOUBLE_EQ(got.volume_pred_ml, want.volume_pred_ml) << where;
      EXPECT_DOUBLE_EQ(got.volume_ref_ml, want.volume_ref_ml) << where;
      EXPECT_DOUBLE_EQ(want.volume_pred_ml, volume_ml(p.data(), n, sp)) << where;
      EXPECT_DOUBLE_EQ(want.dice, dice(p.data(), q.data(), n)) << where;
      EXPECT_DOUBLE_EQ(want.hd95, hd95(p.data(), q.data(), dim, sp)) << where;
    }
  }
}

TEST(MetricCase, RejectsBadLabelNamingTheVoxel) {
  const Dim dim{4, 3, 2};
  Mask ref = empty_mask(dim), pred = empty_mask(dim);
  ref[index_of(dim, 1, 2, 1)] = 3;
  try {
    score_case(pred.data(), ref.data(), dim, {1, 1, 1});
    FAIL() << "label 3 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), "reference labels");
    EXPECT_NE(e.problem().find("1, 2, 1"), std::string::npos) << e.what();
  }
  pred[0] = 200;
  EXPECT_THROW(score_case(pred.data(), empty_mask(dim).data(), dim, {1, 1, 1}), Error);
  const Mask none = empty_mask(dim);
  EXPECT_THROW(score_case(none.data(), none.data(), {4, 3, 0}, {1, 1, 1}), Error);
  EXPECT_THROW(score_case(none.data(), none.data(), dim, {1, -1, 1}), Error);
}

TEST(MetricCase, LabelMapOverloadChecksGrid) {
  LabelMap ref;
  ref.dim = {16, 16, 16};
  ref.spacing = {1, 1, 1};
  ref.data = layered_tumour(ref.dim);
  LabelMap pred = ref;
  const CaseMetrics cm = score_case(pred, ref);
  for (Region r : kRegions) EXPECT_EQ(cm[r].dice, 1.0);

  LabelMap other = ref;
  other.dim = {16, 16, 8};
  other.data.resize(16 * 16 * 8);
  EXPECT_THROW(score_case(other, ref), Error);
  other = ref;
  other.spacing = {1, 1, 1.5};
  EXPECT_THROW(score_case(other, ref), Error);
  other = ref;
  other.data[0] = 3;
  EXPECT_THROW(score_case(other, ref), Error);
}

}  // namespace
}  // namespace kdseg
