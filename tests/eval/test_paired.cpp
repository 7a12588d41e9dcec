// Paired comparisons behind `kdseg reproduce`'s verdicts: the two bootstrap intervals, Holm's
// adjustment, the verdict rules and the headroom ratio.
#include "kdseg/eval/paired.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(PairedBootstrap, FindsAShiftAndNotNoise) {
  // b = a - 0.05 exactly: every resample's mean difference is 0.05.
  std::vector<double> a, b, c;
  for (int i = 0; i < 40; ++i) {
    a.push_back(0.5 + 0.3 * std::sin(i * 1.7));
    b.push_back(a.back() - 0.05);
    // c differs from a by a zero-mean alternating +-0.1: no systematic difference.
    c.push_back(a.back() + (i % 2 ? 0.1 : -0.1));
  }
  const PairedComparison shift = paired_bootstrap(a, b, 2000, 7);
  EXPECT_NEAR(shift.diff, 0.05, 1e-12);
  EXPECT_NEAR(shift.ci95[0], 0.05, 1e-9);
  EXPECT_NEAR(shift.ci95[1], 0.05, 1e-9);
  EXPECT_NEAR(shift.ci95_seeds[0], 0.05, 1e-9);
  EXPECT_EQ(shift.n_cases, 40);
  EXPECT_EQ(shift.n_seeds, 1);
  EXPECT_LT(shift.p, 0.002);  // no resample at or below 0: p = 2 / 2001

  const PairedComparison noise = paired_bootstrap(a, c, 2000, 7);
  EXPECT_NEAR(noise.diff, 0.0, 1e-12);
  EXPECT_LT(noise.ci95[0], 0.0);
  EXPECT_GT(noise.ci95[1], 0.0);
  EXPECT_GT(noise.p, 0.2);
  // The interval is about mean ± 1.96 sd/sqrt(n) = ± 0.031 for sd 0.1, n 40.
  EXPECT_NEAR(noise.ci95[1] - noise.ci95[0], 2 * 1.96 * 0.1 / std::sqrt(40.0), 0.015);

  // The same seed gives the same interval; the sides must match in length.
  const PairedComparison again = paired_bootstrap(a, c, 2000, 7);
  EXPECT_EQ(again.ci95, noise.ci95);
  EXPECT_EQ(again.ci95_seeds, noise.ci95_seeds);
  EXPECT_THROW(paired_bootstrap(a, std::vector<double>(39, 0.5)), Error);
  EXPECT_THROW(paired_bootstrap(std::vector<double>{}, std::vector<double>{}), Error);
}

TEST(PairedBootstrap, SeedLevelIntervalHoldsTheTrainingNoise) {
  // Three seeds; every case gains +0.03 on average, but seed 3's run lost 0.06 on every case
  // (one bad training run). Averaged over seeds each case gains exactly 0.01 (no spread: the
  // per-case interval is a point), while resampling the seeds puts the bad run inside.
  SeedCaseMatrix a(3), b(3);
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < 30; ++i) {
      const double base = 0.6 + 0.2 * std::cos(i * 0.9);
      b[s].push_back(base);
      a[s].push_back(base + (s == 2 ? -0.03 : 0.03));
    }
  const PairedComparison c = paired_bootstrap(a, b, 4000, 3);
  EXPECT_NEAR(c.diff, 0.01, 1e-12);
  EXPECT_NEAR(c.ci95[0], 0.01, 1e-9);
  EXPECT_NEAR(c.ci95[1], 0.01, 1e-9);
  EXPECT_LT(c.ci95_seeds[0], 0.0);  // all three seeds drawn as the bad one: -0.03
  EXPECT_GT(c.ci95_seeds[1], 0.02);
  EXPECT_GT(c.p, 0.05);
  EXPECT_EQ(c.n_seeds, 3);

  SeedCaseMatrix ragged = b;
  ragged[1].pop_back();
  EXPECT_THROW(paired_bootstrap(a, ragged), Error);
}

TEST(PairedBootstrap, HolmAdjustsStepDown) {
  // Sorted p 0.01, 0.02, 0.03, 0.04 of m = 4: 0.04, 0.06, 0.06 (monotone), 0.06.
  const std::vector<double> adj = holm_adjust({0.03, 0.01, 0.04, 0.02});
  ASSERT_EQ(adj.size(), 4u);
  EXPECT_NEAR(adj[1], 0.04, 1e-12);
  EXPECT_NEAR(adj[3], 0.06, 1e-12);
  EXPECT_NEAR(adj[0], 0.06, 1e-12);
  EXPECT_NEAR(adj[2], 0.06, 1e-12);
  EXPECT_NEAR(holm_adjust({0.5, 0.9})[1], 1.0, 1e-12);  // capped at 1
  EXPECT_TRUE(holm_adjust({}).empty());
}

TEST(PairedBootstrap, VerdictsNeedCasesAndTheAdjustedP) {
  PairedComparison c;
  c.a = "student";
  c.b = "control";
  c.diff = 0.04;
  c.n_cases = 40;
  c.p = 0.001;
  c.p_holm = 0.004;
  EXPECT_EQ(comparison_verdict(c), "student is better than control");
  c.diff = -0.04;
  EXPECT_EQ(comparison_verdict(c), "student is worse than control");
  c.p_holm = 0.08;  // significant alone, not after the adjustment
  EXPECT_EQ(comparison_verdict(c), "no difference larger than the noise");
  c.p_holm = 0.001;
  c.n_cases = 9;
  EXPECT_NE(comparison_verdict(c).find("too few cases"), std::string::npos);
}

TEST(PairedBootstrap, RatioOfTwoGains) {
  // student - control = 0.02 on every case, oracle - control = 0.08: the student captured 25 %.
  SeedCaseMatrix control(2), student(2), oracle(2);
  for (int s = 0; s < 2; ++s)
    for (int i = 0; i < 20; ++i) {
      control[s].push_back(0.5 + 0.01 * i);
      student[s].push_back(control[s].back() + 0.02);
      oracle[s].push_back(control[s].back() + 0.08);
    }
  const RatioEstimate r = paired_ratio_bootstrap(student, control, oracle, control, 1000, 1);
  EXPECT_NEAR(r.value, 0.25, 1e-12);
  EXPECT_NEAR(r.ci95[0], 0.25, 1e-9);
  EXPECT_NEAR(r.ci95[1], 0.25, 1e-9);
  // No gain at all: undefined.
  EXPECT_TRUE(std::isnan(paired_ratio_bootstrap(student, control, control, control, 100).value));
}

}  // namespace
}  // namespace kdseg
