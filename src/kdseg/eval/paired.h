#pragma once
// Paired comparisons of two methods scored on the same test cases over the same seeds: the
// statistics behind `kdseg reproduce`'s verdicts. LibTorch-free, pure.
//
// Two bootstrap intervals of the mean difference (a - b):
//  - per case: each case's difference averaged over the seeds, the cases resampled (the seeds'
//    training noise is averaged away, not inside the interval);
//  - seeds and cases: seeds and cases resampled together (a crossed two-stage bootstrap), so the
//    spread between training runs is inside the interval. The verdicts use this one.
// Many comparisons are printed together, so their p-values are adjusted with Holm's step-down
// method (family-wise error rate alpha), and no verdict is given on fewer than kMinVerdictCases
// cases.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

// values[s][i]: a metric of case i from the run of seed s (every seed scores the same cases).
using SeedCaseMatrix = std::vector<std::vector<double>>;

struct PairedComparison {
  std::string a, b, metric;            // e.g. "student", "control", "dice_mean"
  double diff = 0;                     // mean over seeds and cases of (a - b)
  std::array<double, 2> ci95{};        // per-case bootstrap percentile interval
  std::array<double, 2> ci95_seeds{};  // seed-and-case bootstrap interval
  double p = 1;                        // two-sided bootstrap p-value (seed-and-case)
  double p_holm = 1;                   // p after Holm's adjustment over the family (holm_adjust)
  int64_t n_cases = 0, n_seeds = 0;
  std::string verdict;  // one line (comparison_verdict)
};

constexpr int kMinVerdictCases = 10;

// Both intervals and the p-value of (a - b); `n_boot` resamples drawn from a generator seeded by
// `seed` (the same inputs give the same numbers). Throws kdseg::Error when the two sides differ
// in shape or hold no case.
PairedComparison paired_bootstrap(const SeedCaseMatrix& a, const SeedCaseMatrix& b,
                                  int n_boot = 10000, uint64_t seed = 2019);
// One seed.
PairedComparison paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                  int n_boot = 10000, uint64_t seed = 2019);

// Holm's step-down adjustment: the k-th smallest p becomes max over j <= k of
// min(1, (m - j + 1) p_(j)), returned in the input's order.
std::vector<double> holm_adjust(const std::vector<double>& p);

// "a is better than b" / "a is worse than b" when p_holm < alpha, "no difference larger than the
// noise" otherwise, "too few cases for a verdict" below kMinVerdictCases cases.
std::string comparison_verdict(const PairedComparison& c, double alpha = 0.05);

// The ratio mean(num_a - num_b) / mean(den_a - den_b) (e.g. the share of the oracle's gain over
// the control that the student captured) with its seed-and-case bootstrap interval, the two
// means taken on the same resampled seeds and cases. NaN where the denominator is 0.
struct RatioEstimate {
  double value = 0;
  std::array<double, 2> ci95{};
};
RatioEstimate paired_ratio_bootstrap(const SeedCaseMatrix& num_a, const SeedCaseMatrix& num_b,
                                     const SeedCaseMatrix& den_a, const SeedCaseMatrix& den_b,
                                     int n_boot = 10000, uint64_t seed = 2019);

}  // namespace kdseg
