#pragma once
// Summary statistics of a metric over cases: the numbers behind the paper's box plots
// (docs/design.md §5).
//
// Conventions follow the Python tools the BraTS community reports with, so tables can be compared
// digit for digit: percentiles interpolate linearly (numpy.percentile's default, "linear"), the
// standard deviation is the sample one (ddof = 1, as pandas' Series.std).
#include <cstdint>
#include <vector>

namespace kdseg {

struct Stats {
  double mean = 0;    // NaN when n == 0
  double std = 0;     // sample std (ddof = 1); 0 when n == 1, NaN when n == 0
  double median = 0;  // = p50
  double p25 = 0;     // 25th percentile, linear interpolation
  double p75 = 0;     // 75th percentile, linear interpolation
  int64_t n = 0;      // values used (NaN excluded), e.g. 125
  int64_t n_nan = 0;  // NaN values left out, e.g. 3 cases with an empty reference
};

// q-th percentile (q in [0, 100]) of `values` by linear interpolation between the closest ranks,
// bit-compatible with numpy.percentile(values, q). NaN if `values` is empty or holds a NaN (as
// numpy). Takes a copy because it partially reorders it; O(n).
double percentile(std::vector<double> values, double q);
// The same on values already sorted ascending (no NaN); O(1). Used to take several percentiles
// of one sorted array.
double percentile_sorted(const std::vector<double>& sorted, double q);

// Mean, std, median, quartiles of the non-NaN values; NaN values are counted in n_nan.
Stats summarize(const std::vector<double>& values);

}  // namespace kdseg
