#pragma once
// Counter-based random numbers for the data pipeline (docs/design.md §4): every sample's draws
// derive only from (seed, step, sample index), so a resumed run, a run with another number of
// loader threads and a distributed run all draw exactly the samples of one uninterrupted process.
// The draws are written out here (no std:: distributions, whose output differs between standard
// libraries). Header-only, LibTorch-free.
#include <cmath>
#include <cstdint>

namespace kdseg::data {

// One SplitMix64 step: a well-mixed 64-bit hash of `x`.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The key of sample `index` of optimiser step `step`, e.g. sample_key(2019, 5000, 1).
inline uint64_t sample_key(uint64_t seed, int64_t step, int64_t index) {
  return mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(step)) ^
               (static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull));
}

// SplitMix64 on a counter: cheap, reproducible, good enough for sampling decisions.
class CounterRng {
 public:
  explicit CounterRng(uint64_t key) : state_(mix64(key)) {}
  uint64_t next() { return mix64(state_++); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  bool bernoulli(double p) { return uniform() < p; }
  // Uniform integer in [0, n); n >= 1.
  int64_t below(int64_t n) {
    return static_cast<int64_t>(uniform() * static_cast<double>(n)) % (n > 0 ? n : 1);
  }
  // Uniform integer in [lo, hi] (inclusive).
  int64_t between(int64_t lo, int64_t hi) { return lo + below(hi - lo + 1); }

 private:
  uint64_t state_;
};

}  // namespace kdseg::data
