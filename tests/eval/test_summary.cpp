// Percentiles and summaries against values worked out by hand with numpy's "linear" rule:
// rank (n - 1) * q / 100, interpolated between the two closest sorted values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kdseg/eval/summary.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(SummaryPercentile, InterpolatesBetweenRanks) {
  // 4 values: rank 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3).
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 95), 3.85);
  // 3 values, unsorted: rank 2 * 0.25 = 0.5 -> halfway between 0 and 5.
  EXPECT_DOUBLE_EQ(percentile({10, 0, 5}, 25), 2.5);
  EXPECT_DOUBLE_EQ(percentile({10, 0, 5}, 50), 5.0);
  // 0..10: rank 9.5 -> 9.5.
  std::vector<double> ramp;
  for (int i = 10; i >= 0; --i) ramp.push_back(i);
  EXPECT_DOUBLE_EQ(percentile(ramp, 95), 9.5);
  EXPECT_DOUBLE_EQ(percentile(ramp, 0), 0.0);
  EXPECT_DOUBLE_EQ(percentile(ramp, 100), 10.0);
}

TEST(SummaryPercentile, DuplicatesAndSingleValue) {
  EXPECT_DOUBLE_EQ(percentile({2, 2, 2, 7}, 50), 2.0);
  EXPECT_DOUBLE_EQ(percentile({2, 2, 2, 7}, 90), 5.5);  // rank 2.7: 2 + 0.7 * 5
  EXPECT_DOUBLE_EQ(percentile({-3.5}, 95), -3.5);
}

TEST(SummaryPercentile, EmptyOrNaNGivesNaN) {
  EXPECT_TRUE(std::isnan(percentile({}, 50)));
  EXPECT_TRUE(std::isnan(percentile({1, kNaN, 3}, 50)));
  EXPECT_TRUE(std::isnan(percentile_sorted({}, 50)));
}

TEST(SummaryPercentile, RejectsQOutsideRange) {
  EXPECT_THROW(percentile({1, 2}, -1), Error);
  EXPECT_THROW(percentile({1, 2}, 100.5), Error);
  EXPECT_THROW(percentile({1, 2}, kNaN), Error);
}

TEST(SummaryPercentile, SelectionMatchesSorted) {
  // percentile() selects with nth_element; it must agree exactly with reading a sorted copy.
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-50, 50);
  for (int n : {1, 2, 3, 10, 101}) {
    std::vector<double> v(n);
    for (double& x : v) x = u(rng);
    std::vector<double> sorted = v;
    std::sort(sorted.begin(), sorted.end());
    for (double q : {0.0, 5.0, 25.0, 50.0, 62.5, 75.0, 95.0, 99.9, 100.0})
      EXPECT_EQ(percentile(v, q), percentile_sorted(sorted, q)) << "n=" << n << " q=" << q;
  }
}

TEST(Summary, LeavesOutAndCountsNaN) {
  const Stats s = summarize({3, kNaN, 1, 4, 2});
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(s.n_nan, 1);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  // Sample std: squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
  EXPECT_DOUBLE_EQ(s.std, std::sqrt(5.0 / 3.0));
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.p25, 1.75);  // rank 0.75
  EXPECT_DOUBLE_EQ(s.p75, 3.25);  // rank 2.25
}

TEST(Summary, SingleValueHasZeroStd) {
  const Stats s = summarize({0.8});
  EXPECT_EQ(s.n, 1);
  EXPECT_EQ(s.n_nan, 0);
  EXPECT_DOUBLE_EQ(s.mean, 0.8);
  EXPECT_EQ(s.std, 0.0);
  EXPECT_DOUBLE_EQ(s.median, 0.8);
  EXPECT_DOUBLE_EQ(s.p25, 0.8);
  EXPECT_DOUBLE_EQ(s.p75, 0.8);
}

TEST(Summary, NoValuesGivesNaN) {
  for (const std::vector<double>& v : {std::vector<double>{}, std::vector<double>{kNaN, kNaN}}) {
    const Stats s = summarize(v);
    EXPECT_EQ(s.n, 0);
    EXPECT_EQ(s.n_nan, static_cast<int64_t>(v.size()));
    EXPECT_TRUE(std::isnan(s.mean));
    EXPECT_TRUE(std::isnan(s.std));
    EXPECT_TRUE(std::isnan(s.median));
    EXPECT_TRUE(std::isnan(s.p25));
    EXPECT_TRUE(std::isnan(s.p75));
  }
}

TEST(Summary, SkewedSample) {
  // Dice-like scores with one failure: the median resists it, the mean does not.
  const Stats s = summarize({0.9, 0.92, 0.88, 0.0, 0.91});
  EXPECT_NEAR(s.mean, 0.722, 1e-12);
  EXPECT_NEAR(s.median, 0.9, 1e-12);
  EXPECT_NEAR(s.p25, 0.88, 1e-12);
  EXPECT_NEAR(s.p75, 0.91, 1e-12);
  // Deviations from 0.722: 0.178, 0.198, 0.158, -0.722, 0.188.
  const double ss = 0.178 * 0.178 + 0.198 * 0.198 + 0.158 * 0.158 + 0.722 * 0.722 + 0.188 * 0.188;
  EXPECT_NEAR(s.std, std::sqrt(ss / 4), 1e-12);
}

}  // namespace
}  // namespace kdseg
