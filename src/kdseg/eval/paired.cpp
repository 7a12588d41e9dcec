#include "kdseg/eval/paired.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kdseg/data/random.h"  // header-only counter RNG, LibTorch-free
#include "kdseg/eval/summary.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

void check_same_shape(const SeedCaseMatrix& a, const SeedCaseMatrix& b) {
  if (a.empty() || a.size() != b.size() || a[0].empty())
    throw Error("paired comparison", "needs the same, non-zero number of seeds and cases");
  for (size_t s = 0; s < a.size(); ++s)
    if (a[s].size() != a[0].size() || b[s].size() != a[0].size())
      throw Error("paired comparison", "every seed must score the same cases on both sides");
}

SeedCaseMatrix difference(const SeedCaseMatrix& a, const SeedCaseMatrix& b) {
  check_same_shape(a, b);
  SeedCaseMatrix d = a;
  for (size_t s = 0; s < a.size(); ++s)
    for (size_t i = 0; i < a[s].size(); ++i) d[s][i] = a[s][i] - b[s][i];
  return d;
}

double mean_of(const SeedCaseMatrix& d) {
  double sum = 0;
  for (const auto& row : d) sum += std::accumulate(row.begin(), row.end(), 0.0);
  return sum / static_cast<double>(d.size() * d[0].size());
}

// One crossed resample: S seeds and N cases drawn with replacement.
struct Resample {
  std::vector<size_t> seeds, cases;
};
Resample draw(data::CounterRng& rng, size_t n_seeds, size_t n_cases) {
  Resample r;
  r.seeds.resize(n_seeds);
  r.cases.resize(n_cases);
  for (auto& s : r.seeds) s = static_cast<size_t>(rng.below(static_cast<int64_t>(n_seeds)));
  for (auto& i : r.cases) i = static_cast<size_t>(rng.below(static_cast<int64_t>(n_cases)));
  return r;
}
double resampled_mean(const SeedCaseMatrix& d, const Resample& r) {
  double sum = 0;
  for (size_t s : r.seeds)
    for (size_t i : r.cases) sum += d[s][i];
  return sum / static_cast<double>(r.seeds.size() * r.cases.size());
}

std::array<double, 2> interval(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return {percentile_sorted(values, 2.5), percentile_sorted(values, 97.5)};
}

}  // namespace

PairedComparison paired_bootstrap(const SeedCaseMatrix& a, const SeedCaseMatrix& b, int n_boot,
                                  uint64_t seed) {
  const SeedCaseMatrix d = difference(a, b);
  const size_t n_seeds = d.size(), n = d[0].size();
  PairedComparison c;
  c.n_cases = static_cast<int64_t>(n);
  c.n_seeds = static_cast<int64_t>(n_seeds);
  c.diff = mean_of(d);

  // Per case: each case averaged over seeds, cases resampled.
  std::vector<double> per_case(n, 0.0);
  for (const auto& row : d)
    for (size_t i = 0; i < n; ++i) per_case[i] += row[i] / static_cast<double>(n_seeds);
  std::vector<double> means(static_cast<size_t>(n_boot));
  data::CounterRng rng(seed);
  for (auto& m : means) {
    double s = 0;
    for (size_t i = 0; i < n; ++i)
      s += per_case[static_cast<size_t>(rng.below(static_cast<int64_t>(n)))];
    m = s / static_cast<double>(n);
  }
  c.ci95 = interval(means);

  // Seeds and cases resampled together.
  data::CounterRng rng2(data::mix64(seed) ^ 0x5EED5);
  int64_t at_or_below = 0, at_or_above = 0;
  for (auto& m : means) {
    m = resampled_mean(d, draw(rng2, n_seeds, n));
    at_or_below += m <= 0;
    at_or_above += m >= 0;
  }
  c.ci95_seeds = interval(means);
  c.p = std::min(1.0, 2.0 * static_cast<double>(std::min(at_or_below, at_or_above) + 1) /
                          static_cast<double>(n_boot + 1));
  c.p_holm = c.p;
  return c;
}

PairedComparison paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                  int n_boot, uint64_t seed) {
  return paired_bootstrap(SeedCaseMatrix{a}, SeedCaseMatrix{b}, n_boot, seed);
}

std::vector<double> holm_adjust(const std::vector<double>& p) {
  const size_t m = p.size();
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return p[i] < p[j]; });
  std::vector<double> adjusted(m);
  double running = 0;
  for (size_t k = 0; k < m; ++k) {
    running = std::max(running, std::min(1.0, static_cast<double>(m - k) * p[order[k]]));
    adjusted[order[k]] = running;
  }
  return adjusted;
}

std::string comparison_verdict(const PairedComparison& c, double alpha) {
  if (c.n_cases < kMinVerdictCases)
    return "too few cases for a verdict (" + std::to_string(c.n_cases) + " < " +
           std::to_string(kMinVerdictCases) + ")";
  if (c.p_holm < alpha) return c.a + (c.diff > 0 ? " is better than " : " is worse than ") + c.b;
  return "no difference larger than the noise";
}

RatioEstimate paired_ratio_bootstrap(const SeedCaseMatrix& num_a, const SeedCaseMatrix& num_b,
                                     const SeedCaseMatrix& den_a, const SeedCaseMatrix& den_b,
                                     int n_boot, uint64_t seed) {
  const SeedCaseMatrix num = difference(num_a, num_b), den = difference(den_a, den_b);
  check_same_shape(num, den);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto ratio = [&](double n, double d) { return d == 0 ? nan : n / d; };
  RatioEstimate r;
  r.value = ratio(mean_of(num), mean_of(den));
  std::vector<double> values;
  data::CounterRng rng(seed);
  for (int k = 0; k < n_boot; ++k) {
    const Resample s = draw(rng, num.size(), num[0].size());
    const double v = ratio(resampled_mean(num, s), resampled_mean(den, s));
    if (!std::isnan(v)) values.push_back(v);
  }
  r.ci95 = values.empty() ? std::array<double, 2>{nan, nan} : interval(values);
  return r;
}

}  // namespace kdseg
