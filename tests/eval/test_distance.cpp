// The separable EDT against hand values and against a brute-force minimum over all features.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kdseg/eval/distance.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using Dim = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

// O(n * n_features) reference: the definition of the squared EDT.
std::vector<double> brute_force_squared_edt(const std::vector<uint8_t>& f, const Dim& dim,
                                            const Spacing& sp) {
  std::vector<std::array<int64_t, 3>> features;
  for (int64_t z = 0; z < dim[2]; ++z)
    for (int64_t y = 0; y < dim[1]; ++y)
      for (int64_t x = 0; x < dim[0]; ++x)
        if (f[(z * dim[1] + y) * dim[0] + x]) features.push_back({x, y, z});
  std::vector<double> d(f.size(), kInf);
  for (int64_t z = 0; z < dim[2]; ++z)
    for (int64_t y = 0; y < dim[1]; ++y)
      for (int64_t x = 0; x < dim[0]; ++x) {
        double best = kInf;
        for (const auto& p : features) {
          const double dx = (x - p[0]) * sp[0], dy = (y - p[1]) * sp[1], dz = (z - p[2]) * sp[2];
          best = std::min(best, dx * dx + dy * dy + dz * dz);
        }
        d[(z * dim[1] + y) * dim[0] + x] = best;
      }
  return d;
}

std::vector<uint8_t> random_mask(const Dim& dim, double density, std::mt19937& rng) {
  std::bernoulli_distribution b(density);
  std::vector<uint8_t> m(static_cast<size_t>(dim[0] * dim[1] * dim[2]));
  for (auto& v : m) v = b(rng);
  return m;
}

void expect_same(const std::vector<double>& got, const std::vector<double>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isinf(want[i])) {
      EXPECT_TRUE(std::isinf(got[i])) << what << " voxel " << i;
    } else {
      EXPECT_NEAR(got[i], want[i], 1e-9 * (1 + want[i])) << what << " voxel " << i;
    }
  }
}

TEST(Distance1d, BinaryFeaturesWithSpacing) {
  // Features at 1 and 5, spacing 2 mm: index 3 is two samples from both, (2 * 2)² = 16 mm².
  const std::vector<double> d = squared_edt_1d({kInf, 0, kInf, kInf, kInf, 0, kInf}, 2.0);
  const std::vector<double> want{4, 0, 4, 16, 4, 0, 4};
  EXPECT_EQ(d, want);
}

TEST(Distance1d, SampledFunction) {
  // d[p] = min_q (p - q)² + f[q] with f[1] = 5, f[3] = 0:
  // p=0: min(1+5, 9) = 6; p=1: min(5, 4) = 4; p=2: min(1+5, 1) = 1; p=3: 0.
  const std::vector<double> d = squared_edt_1d({kInf, 5, kInf, 0}, 1.0);
  const std::vector<double> want{6, 4, 1, 0};
  EXPECT_EQ(d, want);
}

TEST(Distance1d, NoFeatureIsInfinite) {
  for (double v : squared_edt_1d({kInf, kInf, kInf}, 1.0)) EXPECT_TRUE(std::isinf(v));
  EXPECT_TRUE(squared_edt_1d({}, 1.0).empty());
}

TEST(DistanceEdt, SingleFeatureAnisotropic) {
  const Dim dim{4, 5, 6};
  const Spacing sp{1, 2, 3};
  std::vector<uint8_t> f(4 * 5 * 6, 0);
  f[0] = 1;  // (0, 0, 0)
  const std::vector<double> d = squared_edt(f.data(), dim, sp);
  EXPECT_EQ(d[0], 0.0);
  // (3, 4, 5): 3² + (4 * 2)² + (5 * 3)² = 9 + 64 + 225.
  EXPECT_DOUBLE_EQ(d[(5 * 5 + 4) * 4 + 3], 298.0);
  // (0, 0, 2): 6 mm along z.
  EXPECT_DOUBLE_EQ(d[(2 * 5 + 0) * 4 + 0], 36.0);
}

TEST(DistanceEdt, NoFeatureIsInfinite) {
  std::vector<uint8_t> f(3 * 4 * 5, 0);
  for (double v : squared_edt(f.data(), {3, 4, 5}, {1, 1, 1})) EXPECT_TRUE(std::isinf(v));
}

TEST(DistanceEdt, MatchesBruteForceOnRandomMasks) {
  const Spacing sp{0.7, 1.3, 2.1};
  for (unsigned seed : {1u, 2u, 3u, 4u, 5u}) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int64_t> side(2, 11);
    const Dim dim{side(rng), side(rng), side(rng)};
    for (double density : {0.01, 0.1, 0.5}) {
      const auto f = random_mask(dim, density, rng);
      expect_same(squared_edt(f.data(), dim, sp), brute_force_squared_edt(f, dim, sp),
                  "seed " + std::to_string(seed) + " density " + std::to_string(density));
    }
  }
}

TEST(DistanceEdt, MatchesBruteForceOnThinGrids) {
  // Axes of length 1 skip their pass; lines along each axis in turn.
  std::mt19937 rng(11);
  for (const Dim& dim : {Dim{1, 1, 13}, Dim{13, 1, 1}, Dim{1, 13, 1}, Dim{6, 1, 7}, Dim{1, 1, 1}}) {
    const Spacing sp{1.5, 0.5, 2.5};
    const auto f = random_mask(dim, 0.2, rng);
    expect_same(squared_edt(f.data(), dim, sp), brute_force_squared_edt(f, dim, sp), "thin grid");
  }
}

TEST(DistanceEdt, AtQueriesMatchesFullTransform) {
  const Dim dim{9, 8, 7};
  const Spacing sp{1.0, 0.9, 3.0};
  for (unsigned seed : {21u, 22u, 23u}) {
    std::mt19937 rng(seed);
    const auto f = random_mask(dim, 0.05, rng);
    const auto q = random_mask(dim, 0.15, rng);
    const auto full = squared_edt(f.data(), dim, sp);
    std::vector<double> want;
    for (size_t i = 0; i < q.size(); ++i)
      if (q[i]) want.push_back(full[i]);
    expect_same(squared_edt_at(f.data(), q.data(), dim, sp), want, "seed " + std::to_string(seed));
  }
  std::vector<uint8_t> none(9 * 8 * 7, 0), one(9 * 8 * 7, 1);
  EXPECT_TRUE(squared_edt_at(one.data(), none.data(), dim, sp).empty());
}

TEST(DistanceEdt, VoxelListsMatchMasks) {
  const Dim dim{10, 7, 9};
  const Spacing sp{1.2, 0.8, 2.0};
  std::mt19937 rng(31);
  const auto f = random_mask(dim, 0.03, rng);
  const auto q = random_mask(dim, 0.2, rng);
  std::vector<int64_t> fv, qv;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i]) fv.push_back(static_cast<int64_t>(i));
    if (q[i]) qv.push_back(static_cast<int64_t>(i));
  }
  expect_same(squared_edt_at(fv, qv, dim, sp), squared_edt_at(f.data(), q.data(), dim, sp),
              "lists");
  // No feature: every query is infinitely far.
  for (double v : squared_edt_at({}, qv, dim, sp)) EXPECT_TRUE(std::isinf(v));
  // Indices must be in the grid and strictly increasing.
  EXPECT_THROW(squared_edt_at({5, 3}, {1}, dim, sp), Error);
  EXPECT_THROW(squared_edt_at({3, 3}, {1}, dim, sp), Error);
  EXPECT_THROW(squared_edt_at({1}, {10 * 7 * 9}, dim, sp), Error);
  EXPECT_THROW(squared_edt_at({-1}, {1}, dim, sp), Error);
}

TEST(DistanceEdt, RejectsBadGrid) {
  std::vector<uint8_t> f(8, 1);
  EXPECT_THROW(squared_edt(f.data(), {2, 0, 4}, {1, 1, 1}), Error);
  EXPECT_THROW(squared_edt(f.data(), {2, 2, 2}, {1, 0, 1}), Error);
  EXPECT_THROW(squared_edt(f.data(), {2, 2, 2}, {1, 1, std::nan("")}), Error);
}

}  // namespace
}  // namespace kdseg
