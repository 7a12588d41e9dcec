#include "kdseg/synth/rng.h"

#include <cmath>

namespace kdseg::synth {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t case_seed(uint64_t seed, int split, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(split + 1)) ^
                    static_cast<uint64_t>(index));
}

double Rng::log_uniform(double lo, double hi) {
  return std::exp(uniform(std::log(lo), std::log(hi)));
}

double Rng::normal() {
  double u1 = uniform();
  double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

int64_t Rng::below(int64_t n) {
  if (n <= 1) return 0;
  return static_cast<int64_t>(uniform() * static_cast<double>(n)) % n;
}

void FastRng::normal2(float& a, float& b) {
  float u1 = uniform();
  float u2 = uniform();
  if (u1 < 1e-12f) u1 = 1e-12f;
  float r = std::sqrt(-2.0f * std::log(u1));
  float t = 6.2831853f * u2;
  a = r * std::cos(t);
  b = r * std::sin(t);
}

}  // namespace kdseg::synth
