// Times score_case and hd95 on full BraTS-sized grids (240×240×155, 1 mm), one core.
//
//   bench_metrics [repeats]      e.g. bench_metrics 5
//
// Cases: a typical layered tumour against a shifted, resized prediction; a brain-sized mask pair
// (HD95's bounding box is most of the grid); and the worst case for the crop, two specks in
// opposite corners, so the distance transform runs on the whole grid.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <vector>

#include "kdseg/eval/metrics.h"

namespace {

using kdseg::Region;
constexpr std::array<int64_t, 3> kDim{240, 240, 155};
constexpr std::array<double, 3> kSpacing{1, 1, 1};

int64_t index_of(int64_t x, int64_t y, int64_t z) {
  return (z * kDim[1] + y) * kDim[0] + x;
}

// Concentric balls about `c`: oedema (2) out to r, core (1) to 0.6 r, enhancing (4) to 0.3 r.
std::vector<uint8_t> layered_tumour(std::array<double, 3> c, double r) {
  std::vector<uint8_t> m(static_cast<size_t>(kDim[0] * kDim[1] * kDim[2]), 0);
  for (int64_t z = 0; z < kDim[2]; ++z)
    for (int64_t y = 0; y < kDim[1]; ++y)
      for (int64_t x = 0; x < kDim[0]; ++x) {
        const double dx = x - c[0], dy = y - c[1], dz = z - c[2];
        const double d = std::sqrt(dx * dx + dy * dy + dz * dz);
        m[index_of(x, y, z)] = d < 0.3 * r ? 4 : d < 0.6 * r ? 1 : d < r ? 2 : 0;
      }
  return m;
}

struct Timing {
  double wall_ms, cpu_ms;  // medians; CPU time is the fairer number on a shared machine
};

Timing time_ms(int repeats, const std::function<void()>& f) {
  std::vector<double> wall, cpu;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    f();
    cpu.push_back(1000.0 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
    wall.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

void report(const char* name, const std::vector<uint8_t>& pred, const std::vector<uint8_t>& ref,
            int repeats) {
  kdseg::CaseMetrics cm;
  const Timing t_case =
      time_ms(repeats, [&] { cm = kdseg::score_case(pred.data(), ref.data(), kDim, kSpacing); });
  const auto wt_pred =
      kdseg::region_mask(pred.data(), static_cast<int64_t>(pred.size()), Region::WT);
  const auto wt_ref = kdseg::region_mask(ref.data(), static_cast<int64_t>(ref.size()), Region::WT);
  volatile double sink = 0;  // keeps the call from being optimised away
  const Timing t_hd95 =
      time_ms(repeats, [&] { sink = kdseg::hd95(wt_pred.data(), wt_ref.data(), kDim, kSpacing); });
  std::printf("%-16s score_case %7.1f ms (cpu %7.1f)   hd95(WT) %7.1f ms (cpu %7.1f)\n", name,
              t_case.wall_ms, t_case.cpu_ms, t_hd95.wall_ms, t_hd95.cpu_ms);
  std::printf("%-16s Dice ET/WT/TC %.3f %.3f %.3f   HD95 ET/WT/TC %.2f %.2f %.2f mm\n", "",
              cm[Region::ET].dice, cm[Region::WT].dice, cm[Region::TC].dice, cm[Region::ET].hd95,
              cm[Region::WT].hd95, cm[Region::TC].hd95);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  std::printf("grid %lldx%lldx%lld, %d repeats, median times\n", static_cast<long long>(kDim[0]),
              static_cast<long long>(kDim[1]), static_cast<long long>(kDim[2]), repeats);

  report("tumour r~30", layered_tumour({125, 110, 80}, 33), layered_tumour({120, 115, 78}, 30),
         repeats);
  report("brain-sized", layered_tumour({121, 119, 78}, 75), layered_tumour({118, 122, 76}, 72),
         repeats);

  std::vector<uint8_t> corners(static_cast<size_t>(kDim[0] * kDim[1] * kDim[2]), 0);
  corners[index_of(0, 0, 0)] = 4;
  corners[index_of(kDim[0] - 1, kDim[1] - 1, kDim[2] - 1)] = 4;
  report("opposite specks", corners, layered_tumour({120, 120, 77}, 20), repeats);
  return 0;
}
