#include "kdseg/synth/tumour_growth.h"

#include <algorithm>
#include <cmath>

#include "kdseg/util/error.h"

namespace kdseg::synth {

GrowthResult grow_tumour(const Grid& g, const std::vector<float>& dif, const GrowthParams& p) {
  if (static_cast<int64_t>(dif.size()) != g.n_voxels())
    throw Error("grow_tumour", "diffusivity does not match the grid");
  const int64_t nx = g.dim[0], ny = g.dim[1], nz = g.dim[2], n = g.n_voxels();
  const double h = g.spacing;
  const double d_wm = p.infiltration_mm * p.infiltration_mm * p.rho_per_day;  // mm^2/day
  double dmax = 0;
  for (float d : dif) dmax = std::max(dmax, static_cast<double>(d));
  dmax = std::max(dmax, 1e-6);
  // Explicit stability: sum of face coefficients <= 6 lambda <= 0.9; reaction step <= 0.1.
  const double dt = std::min(0.15 * h * h / (d_wm * dmax), 0.1 / p.rho_per_day);
  const float lambda = static_cast<float>(d_wm * dt / (h * h));
  const float rdt = static_cast<float>(p.rho_per_day * dt);
  // Face coefficients to the +x, +y, +z neighbour (harmonic mean: no flux into D = 0).
  std::vector<float> kx(static_cast<size_t>(n), 0.f), ky(kx), kz(kx);
  auto harm = [](float a, float b) { return (a > 0 && b > 0) ? 2 * a * b / (a + b) : 0.f; };
  for (int64_t k = 0; k < nz; ++k)
    for (int64_t j = 0; j < ny; ++j)
      for (int64_t i = 0; i < nx; ++i) {
        const int64_t v = g.index(i, j, k);
        const float a = dif[static_cast<size_t>(v)];
        if (i + 1 < nx)
          kx[static_cast<size_t>(v)] = lambda * harm(a, dif[static_cast<size_t>(v + 1)]);
        if (j + 1 < ny)
          ky[static_cast<size_t>(v)] = lambda * harm(a, dif[static_cast<size_t>(v + nx)]);
        if (k + 1 < nz)
          kz[static_cast<size_t>(v)] = lambda * harm(a, dif[static_cast<size_t>(v + nx * ny)]);
      }
  GrowthResult r;
  r.u = Field(g, 1);
  std::vector<float> un(static_cast<size_t>(n), 0.f);
  std::vector<float> t_cross(static_cast<size_t>(n), -1.f);
  std::vector<float>& u = r.u.v;
  std::vector<bool> started(p.seeds.size(), false);
  const double sigma = std::max(1.5 * h, 2.0);
  auto plant = [&](const Vec3& c) {
    const int64_t rad = static_cast<int64_t>(std::ceil(3 * sigma / h));
    const int64_t ci = std::llround((c[0] - g.origin[0]) / h),
                  cj = std::llround((c[1] - g.origin[1]) / h),
                  ck = std::llround((c[2] - g.origin[2]) / h);
    for (int64_t k = std::max<int64_t>(0, ck - rad); k <= std::min(nz - 1, ck + rad); ++k)
      for (int64_t j = std::max<int64_t>(0, cj - rad); j <= std::min(ny - 1, cj + rad); ++j)
        for (int64_t i = std::max<int64_t>(0, ci - rad); i <= std::min(nx - 1, ci + rad); ++i) {
          const int64_t v = g.index(i, j, k);
          if (dif[static_cast<size_t>(v)] <= 0) continue;
          const Vec3 q = g.position(i, j, k);
          const double d2 = (q[0] - c[0]) * (q[0] - c[0]) + (q[1] - c[1]) * (q[1] - c[1]) +
                            (q[2] - c[2]) * (q[2] - c[2]);
          u[static_cast<size_t>(v)] =
              std::max(u[static_cast<size_t>(v)],
                       static_cast<float>(0.8 * std::exp(-0.5 * d2 / (sigma * sigma))));
        }
  };
  // Active box: voxels with u > eps, grown by a margin the front cannot cross between updates.
  std::array<int64_t, 3> lo{0, 0, 0}, hi{0, 0, 0};
  const int update_every = 8;
  auto update_box = [&]() {
    std::array<int64_t, 3> l{nx, ny, nz}, hh{-1, -1, -1};
    for (int64_t k = 0; k < nz; ++k)
      for (int64_t j = 0; j < ny; ++j) {
        const float* row = &u[static_cast<size_t>(g.index(0, j, k))];
        for (int64_t i = 0; i < nx; ++i)
          if (row[i] > 1e-5f) {
            l = {std::min(l[0], i), std::min(l[1], j), std::min(l[2], k)};
            hh = {std::max(hh[0], i), std::max(hh[1], j), std::max(hh[2], k)};
          }
      }
    const int64_t m = update_every + 2;  // a front moves < 1 voxel per step
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::max<int64_t>(0, l[a] - m);
      hi[a] = std::min<int64_t>(g.dim[a], hh[a] + m + 1);
      if (hh[a] < 0) lo[a] = hi[a] = 0;
    }
  };
  const double vox_ml = h * h * h / 1000.0;
  double t = 0;
  int step = 0;
  for (; step < p.max_steps; ++step) {
    bool planted = false;
    for (size_t s = 0; s < p.seeds.size(); ++s) {
      const double delay = s < p.seed_delay_days.size() ? p.seed_delay_days[s] : 0.0;
      if (!started[s] && t >= delay) {
        plant(p.seeds[s]);
        started[s] = true;
        planted = true;
      }
    }
    if (planted || step % update_every == 0) update_box();
    if (step % 4 == 0) {
      int64_t count = 0;
      for (int64_t k = lo[2]; k < hi[2]; ++k)
        for (int64_t j = lo[1]; j < hi[1]; ++j) {
          const float* row = &u[static_cast<size_t>(g.index(0, j, k))];
          for (int64_t i = lo[0]; i < hi[0]; ++i) count += row[i] > p.u_visible;
        }
      r.visible_ml = count * vox_ml;
      bool all_started = std::all_of(started.begin(), started.end(), [](bool b) { return b; });
      if (all_started && r.visible_ml >= p.target_ml) {
        r.reached_target = true;
        break;
      }
    }
    for (int64_t k = lo[2]; k < hi[2]; ++k)
      for (int64_t j = lo[1]; j < hi[1]; ++j)
        for (int64_t i = lo[0]; i < hi[0]; ++i) {
          const size_t v = static_cast<size_t>(g.index(i, j, k));
          const float uc = u[v];
          float flux = 0.f;
          if (i + 1 < nx) flux += kx[v] * (u[v + 1] - uc);
          if (i > 0) flux += kx[v - 1] * (u[v - 1] - uc);
          if (j + 1 < ny) flux += ky[v] * (u[v + nx] - uc);
          if (j > 0) flux += ky[v - nx] * (u[v - nx] - uc);
          if (k + 1 < nz) flux += kz[v] * (u[v + nx * ny] - uc);
          if (k > 0) flux += kz[v - nx * ny] * (u[v - nx * ny] - uc);
          float nu = uc + flux;
          if (dif[v] > 0) nu += rdt * uc * (1.f - uc);
          nu = std::min(1.f, std::max(0.f, nu));
          un[v] = nu;
          if (nu >= p.u_core && t_cross[v] < 0) t_cross[v] = static_cast<float>(t + dt);
        }
    for (int64_t k = lo[2]; k < hi[2]; ++k)
      for (int64_t j = lo[1]; j < hi[1]; ++j) {
        const size_t v0 = static_cast<size_t>(g.index(lo[0], j, k));
        std::copy(un.begin() + static_cast<std::ptrdiff_t>(v0),
                  un.begin() + static_cast<std::ptrdiff_t>(v0 + (hi[0] - lo[0])),
                  u.begin() + static_cast<std::ptrdiff_t>(v0));
      }
    t += dt;
  }
  r.steps = step;
  r.days = t;
  r.age_days = Field(g, 1);
  for (int64_t v = 0; v < n; ++v)
    if (t_cross[static_cast<size_t>(v)] >= 0)
      r.age_days.v[static_cast<size_t>(v)] =
          static_cast<float>(t) - t_cross[static_cast<size_t>(v)];
  return r;
}

}  // namespace kdseg::synth
