#include "kdseg/synth/field.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kdseg::synth {

Grid Grid::crop(const std::array<int64_t, 3>& lo, const std::array<int64_t, 3>& hi) const {
  Grid g;
  g.spacing = spacing;
  for (int a = 0; a < 3; ++a) {
    g.dim[a] = std::max<int64_t>(0, hi[a] - lo[a]);
    g.origin[a] = origin[a] + spacing * static_cast<double>(lo[a]);
  }
  return g;
}

void Field::sample(const Vec3& p, float* out, bool clamp, float outside) const {
  double f[3];
  int64_t i0[3];
  for (int a = 0; a < 3; ++a) {
    double x = (p[a] - grid.origin[a]) / grid.spacing;
    const double hi = static_cast<double>(grid.dim[a] - 1);
    if (x < 0 || x > hi) {
      if (!clamp) {
        for (int c = 0; c < n_ch; ++c) out[c] = outside;
        return;
      }
      x = x < 0 ? 0 : hi;
    }
    double fl = std::floor(x);
    i0[a] = static_cast<int64_t>(fl);
    f[a] = x - fl;
    if (i0[a] >= grid.dim[a] - 1) {  // on the last voxel: step back so i0+1 is valid
      i0[a] = std::max<int64_t>(0, grid.dim[a] - 2);
      f[a] = x - static_cast<double>(i0[a]);
    }
  }
  const int64_t sx = grid.dim[0] > 1 ? 1 : 0;
  const int64_t sy = grid.dim[1] > 1 ? grid.dim[0] : 0;
  const int64_t sz = grid.dim[2] > 1 ? grid.dim[0] * grid.dim[1] : 0;
  const int64_t base = grid.index(i0[0], i0[1], i0[2]);
  const float fx = static_cast<float>(f[0]), fy = static_cast<float>(f[1]),
              fz = static_cast<float>(f[2]);
  const float w[8] = {(1 - fx) * (1 - fy) * (1 - fz),
                      fx * (1 - fy) * (1 - fz),
                      (1 - fx) * fy * (1 - fz),
                      fx * fy * (1 - fz),
                      (1 - fx) * (1 - fy) * fz,
                      fx * (1 - fy) * fz,
                      (1 - fx) * fy * fz,
                      fx * fy * fz};
  const int64_t off[8] = {0, sx, sy, sx + sy, sz, sz + sx, sz + sy, sz + sx + sy};
  for (int c = 0; c < n_ch; ++c) out[c] = 0.f;
  for (int k = 0; k < 8; ++k) {
    if (w[k] == 0.f) continue;
    const float* src = v.data() + (base + off[k]) * n_ch;
    for (int c = 0; c < n_ch; ++c) out[c] += w[k] * src[c];
  }
}

float Field::sample1(const Vec3& p, int c, bool clamp, float outside) const {
  if (n_ch == 1) {
    float out;
    sample(p, &out, clamp, outside);
    return out;
  }
  std::vector<float> tmp(static_cast<size_t>(n_ch));
  sample(p, tmp.data(), clamp, outside);
  return tmp[static_cast<size_t>(c)];
}

Field downsample_box(const Field& f, int factor) {
  Grid g;
  g.spacing = f.grid.spacing * factor;
  for (int a = 0; a < 3; ++a) {
    g.dim[a] = (f.grid.dim[a] + factor - 1) / factor;
    g.origin[a] = f.grid.origin[a] + 0.5 * f.grid.spacing * (factor - 1);
  }
  Field out(g, f.n_ch);
  std::vector<float> count(static_cast<size_t>(g.n_voxels()), 0.f);
  const auto& d = f.grid.dim;
  for (int64_t k = 0; k < d[2]; ++k)
    for (int64_t j = 0; j < d[1]; ++j)
      for (int64_t i = 0; i < d[0]; ++i) {
        const int64_t o = g.index(i / factor, j / factor, k / factor);
        const float* src = f.v.data() + f.grid.index(i, j, k) * f.n_ch;
        float* dst = out.v.data() + o * f.n_ch;
        for (int c = 0; c < f.n_ch; ++c) dst[c] += src[c];
        count[static_cast<size_t>(o)] += 1.f;
      }
  for (int64_t o = 0; o < g.n_voxels(); ++o)
    for (int c = 0; c < f.n_ch; ++c) out.at(o, c) /= count[static_cast<size_t>(o)];
  return out;
}

std::vector<float> chamfer_distance(const std::array<int64_t, 3>& dim, double spacing,
                                    const std::vector<uint8_t>& inside) {
  const float big = std::numeric_limits<float>::max() / 4;
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2];
  std::vector<float> d(inside.size());
  for (size_t v = 0; v < d.size(); ++v) d[v] = inside[v] ? big : 0.f;
  // 3-4-5 chamfer weights in units of spacing / 3.
  const float a = 1.f, b = 4.f / 3.f, c = 5.f / 3.f;
  struct Off {
    int dx, dy, dz;
    float w;
  };
  std::vector<Off> fwd;
  for (int dz = -1; dz <= 0; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        if (dz == 0 && (dy > 0 || (dy == 0 && dx >= 0))) continue;
        int n = std::abs(dx) + std::abs(dy) + std::abs(dz);
        fwd.push_back({dx, dy, dz, n == 1 ? a : (n == 2 ? b : c)});
      }
  auto pass = [&](int sign) {
    for (int64_t kk = 0; kk < nz; ++kk)
      for (int64_t jj = 0; jj < ny; ++jj)
        for (int64_t ii = 0; ii < nx; ++ii) {
          const int64_t k = sign > 0 ? kk : nz - 1 - kk, j = sign > 0 ? jj : ny - 1 - jj,
                        i = sign > 0 ? ii : nx - 1 - ii;
          const int64_t v = (k * ny + j) * nx + i;
          if (d[static_cast<size_t>(v)] == 0.f) continue;
          float best = d[static_cast<size_t>(v)];
          for (const Off& o : fwd) {
            const int64_t x = i + sign * o.dx, y = j + sign * o.dy, z = k + sign * o.dz;
            float nb;
            if (x < 0 || y < 0 || z < 0 || x >= nx || y >= ny || z >= nz)
              nb = 0.f;  // beyond the grid counts as outside
            else
              nb = d[static_cast<size_t>((z * ny + y) * nx + x)];
            best = std::min(best, nb + o.w);
          }
          d[static_cast<size_t>(v)] = best;
        }
  };
  pass(+1);
  pass(-1);
  for (auto& x : d) x *= static_cast<float>(spacing);
  return d;
}

void bspline_weights(double t, double w[4]) {
  const double it = 1.0 - t;
  w[0] = it * it * it / 6.0;
  w[1] = (3 * t * t * t - 6 * t * t + 4) / 6.0;
  w[2] = (-3 * t * t * t + 3 * t * t + 3 * t + 1) / 6.0;
  w[3] = t * t * t / 6.0;
}

BSplineField::BSplineField(const Vec3& lo, const Vec3& hi, double ctrl_mm, int n_comp)
    : h_(ctrl_mm), n_comp_(n_comp) {
  for (int a = 0; a < 3; ++a) {
    lo_[a] = lo[a] - ctrl_mm;  // one control point of margin before the box
    n_[a] = static_cast<int64_t>(std::ceil((hi[a] - lo[a]) / ctrl_mm)) + 4;
  }
  c_.assign(static_cast<size_t>(n_[0] * n_[1] * n_[2] * n_comp_), 0.f);
}

namespace {
// Control index of the first of the 4 points and the weights for coordinate x (mm).
inline void locate(double x, double lo, double h, int64_t n, int64_t& i0, double w[4]) {
  double u = (x - lo) / h;  // control index space; point i influences [i-2, i+2)
  double fl = std::floor(u);
  double t = u - fl;
  i0 = static_cast<int64_t>(fl) - 1;
  bspline_weights(t, w);
  // Outside the lattice: clamp to its edge (the lattice has margin, so this only trims).
  if (i0 < 0) {
    i0 = 0;
    bspline_weights(0, w);
  }
  if (i0 + 3 >= n) {
    i0 = n - 4;
    bspline_weights(0.999999, w);
  }
}
}  // namespace

void BSplineField::eval(const Vec3& p, float* out) const {
  int64_t i0[3];
  double w[3][4];
  for (int a = 0; a < 3; ++a) locate(p[a], lo_[a], h_, n_[a], i0[a], w[a]);
  for (int c = 0; c < n_comp_; ++c) out[c] = 0.f;
  for (int dz = 0; dz < 4; ++dz)
    for (int dy = 0; dy < 4; ++dy) {
      const double wyz = w[2][dz] * w[1][dy];
      const float* row =
          c_.data() + (((i0[2] + dz) * n_[1] + i0[1] + dy) * n_[0] + i0[0]) * n_comp_;
      for (int dx = 0; dx < 4; ++dx) {
        const float ww = static_cast<float>(wyz * w[0][dx]);
        for (int c = 0; c < n_comp_; ++c) out[c] += ww * row[dx * n_comp_ + c];
      }
    }
}

Field BSplineField::eval_on_grid(const Grid& g) const {
  Field out(g, n_comp_);
  if (g.n_voxels() == 0) return out;
  BSplineSlicer sl(*this, g);
  for (int64_t z = 0; z < g.dim[2]; ++z) sl.slice(z, out.v.data() + z * sl.slice_size());
  return out;
}

BSplineSlicer::BSplineSlicer(const BSplineField& f, const Grid& g)
    : nx_(g.dim[0]), ny_(g.dim[1]), nc_(f.n_comp_) {
  const int nc = nc_;
  // Per axis: first control index and weights of every grid index.
  std::array<std::vector<int64_t>, 3> first;
  std::array<std::vector<float>, 3> wts;
  std::array<int64_t, 3> cmin{}, cmax{};
  for (int a = 0; a < 3; ++a) {
    first[a].resize(static_cast<size_t>(g.dim[a]));
    wts[a].resize(static_cast<size_t>(g.dim[a] * 4));
    cmin[a] = f.n_[a];
    cmax[a] = 0;
    for (int64_t i = 0; i < g.dim[a]; ++i) {
      double w[4];
      int64_t i0;
      locate(g.origin[a] + g.spacing * i, f.lo_[a], f.h_, f.n_[a], i0, w);
      first[a][static_cast<size_t>(i)] = i0;
      for (int q = 0; q < 4; ++q) wts[a][static_cast<size_t>(i * 4 + q)] = static_cast<float>(w[q]);
      cmin[a] = std::min(cmin[a], i0);
      cmax[a] = std::max(cmax[a], i0 + 4);
    }
  }
  if (g.n_voxels() == 0) return;
  const int64_t nx = nx_, ny = ny_;
  const int64_t cny = cmax[1] - cmin[1], cnz = cmax[2] - cmin[2];
  // Stage 1: contract x. t1[(cz, cy), x, comp]
  std::vector<float> t1(static_cast<size_t>(cnz * cny * nx * nc), 0.f);
  for (int64_t cz = 0; cz < cnz; ++cz)
    for (int64_t cy = 0; cy < cny; ++cy) {
      const float* crow = f.c_.data() + ((cz + cmin[2]) * f.n_[1] + cy + cmin[1]) * f.n_[0] * nc;
      float* dst = t1.data() + (cz * cny + cy) * nx * nc;
      for (int64_t x = 0; x < nx; ++x) {
        const int64_t i0 = first[0][static_cast<size_t>(x)];
        const float* w = &wts[0][static_cast<size_t>(x * 4)];
        for (int q = 0; q < 4; ++q)
          for (int c = 0; c < nc; ++c) dst[x * nc + c] += w[q] * crow[(i0 + q) * nc + c];
      }
    }
  // Stage 2: contract y. planes[cz, y, x, comp]
  planes_.assign(static_cast<size_t>(cnz * ny * nx * nc), 0.f);
  for (int64_t cz = 0; cz < cnz; ++cz)
    for (int64_t y = 0; y < ny; ++y) {
      const int64_t j0 = first[1][static_cast<size_t>(y)] - cmin[1];
      const float* w = &wts[1][static_cast<size_t>(y * 4)];
      float* dst = planes_.data() + (cz * ny + y) * nx * nc;
      for (int q = 0; q < 4; ++q) {
        const float* src = t1.data() + (cz * cny + j0 + q) * nx * nc;
        const float wq = w[q];
        for (int64_t x = 0; x < nx * nc; ++x) dst[x] += wq * src[x];
      }
    }
  first_z_.resize(static_cast<size_t>(g.dim[2]));
  for (int64_t z = 0; z < g.dim[2]; ++z)
    first_z_[static_cast<size_t>(z)] = first[2][static_cast<size_t>(z)] - cmin[2];
  w_z_ = wts[2];
}

void BSplineSlicer::slice(int64_t z, float* out) const {
  const int64_t n = slice_size();
  std::fill(out, out + n, 0.f);
  const int64_t k0 = first_z_[static_cast<size_t>(z)];
  const float* w = &w_z_[static_cast<size_t>(z * 4)];
  for (int q = 0; q < 4; ++q) {
    const float* src = planes_.data() + (k0 + q) * n;
    const float wq = w[q];
    for (int64_t x = 0; x < n; ++x) out[x] += wq * src[x];
  }
}

}  // namespace kdseg::synth
