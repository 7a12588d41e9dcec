#include "kdseg/eval/summary.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kdseg/util/error.h"

namespace kdseg {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_q(double q) {
  if (!(q >= 0 && q <= 100))
    throw Error("percentile", "q = " + std::to_string(q) + " is outside [0, 100]",
                "pass a percentile, e.g. 95 for the 95th");
}

// Where numpy's "linear" method reads the sorted array: between ranks lo and lo + 1 at `gamma`.
struct Rank {
  size_t lo, hi;
  double gamma;
};
Rank rank_of(size_t n, double q) {
  const double virtual_index = static_cast<double>(n - 1) * (q / 100.0);
  const double lo = std::floor(virtual_index);
  Rank r;
  r.lo = static_cast<size_t>(lo);
  r.hi = std::min(r.lo + 1, n - 1);
  r.gamma = virtual_index - lo;
  return r;
}

// numpy's _lerp: interpolates from whichever end is nearer, so that gamma = 1 returns b exactly.
double lerp(double a, double b, double t) {
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

}  // namespace

double percentile_sorted(const std::vector<double>& sorted, double q) {
  check_q(q);
  if (sorted.empty()) return kNaN;
  const Rank r = rank_of(sorted.size(), q);
  return lerp(sorted[r.lo], sorted[r.hi], r.gamma);
}

double percentile(std::vector<double> values, double q) {
  check_q(q);
  if (values.empty()) return kNaN;
  if (std::any_of(values.begin(), values.end(), [](double v) { return std::isnan(v); }))
    return kNaN;
  const Rank r = rank_of(values.size(), q);
  // nth_element leaves every element after lo no smaller than it, so rank lo + 1 is their minimum.
  auto lo_it = values.begin() + static_cast<std::ptrdiff_t>(r.lo);
  std::nth_element(values.begin(), lo_it, values.end());
  const double a = *lo_it;
  const double b = r.hi == r.lo ? a : *std::min_element(lo_it + 1, values.end());
  return lerp(a, b, r.gamma);
}

Stats summarize(const std::vector<double>& values) {
  Stats s;
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values) {
    if (std::isnan(x))
      ++s.n_nan;
    else
      v.push_back(x);
  }
  s.n = static_cast<int64_t>(v.size());
  if (v.empty()) {
    s.mean = s.std = s.median = s.p25 = s.p75 = kNaN;
    return s;
  }
  std::sort(v.begin(), v.end());

  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  // Two passes (deviations from the mean) rather than sum of squares: no cancellation.
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;

  s.median = percentile_sorted(v, 50);
  s.p25 = percentile_sorted(v, 25);
  s.p75 = percentile_sorted(v, 75);
  return s;
}

}  // namespace kdseg
