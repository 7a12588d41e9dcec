#pragma once
// Random numbers for the synthetic cohort. Every case draws from its own generator, derived from
// (seed, split, index) with SplitMix64, so a case's bytes do not depend on the thread count, on
// the order cases run in, or on how many cases the other splits hold (docs/design.md §7
// "Determinism"). The draws are written out here (not std::uniform_real_distribution, whose output
// differs between standard libraries) so that the same seed gives the same cohort on
// every platform.
#include <cstdint>
#include <random>

namespace kdseg::synth {

// One SplitMix64 step: a well-mixed 64-bit hash of `x`.
uint64_t splitmix64(uint64_t x);
// The seed of one case, e.g. case_seed(1234, 0 /*labeled*/, 7).
uint64_t case_seed(uint64_t seed, int split, int64_t index);

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(splitmix64(seed)) {}
  uint64_t next() { return engine_(); }
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double log_uniform(double lo, double hi);  // e.g. volumes: as many 5-10 mL as 50-100 mL
  double normal();                           // N(0, 1), Box-Muller
  double normal(double mean, double sd) { return mean + sd * normal(); }
  bool bernoulli(double p) { return uniform() < p; }
  int64_t below(int64_t n);  // uniform integer in [0, n)
  // A child generator for one sub-task (noise field, vessel tree) so that adding draws to one
  // part of the generator does not shift the numbers of another.
  Rng split() { return Rng(engine_()); }

 private:
  std::mt19937_64 engine_;
};

// A fast generator for the millions of per-voxel draws (noise): xoshiro-style quality is not
// needed, SplitMix64 on a counter is enough and is trivially reproducible.
class FastRng {
 public:
  explicit FastRng(uint64_t seed) : state_(seed) {}
  uint64_t next() { return splitmix64(state_++); }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }  // [0, 1)
  // Two independent N(0, 1) draws (Box-Muller).
  void normal2(float& a, float& b);

 private:
  uint64_t state_;
};

}  // namespace kdseg::synth
