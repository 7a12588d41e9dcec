#include "kdseg/eval/distance.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "kdseg/util/error.h"

namespace kdseg {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void check_grid(const char* where, const std::array<int64_t, 3>& dim,
                const std::array<double, 3>& spacing) {
  for (int a = 0; a < 3; ++a) {
    if (dim[a] <= 0)
      throw Error(where,
                  "dim[" + std::to_string(a) + "] = " + std::to_string(dim[a]) + " is not positive",
                  "pass the grid size {nx, ny, nz} in voxels");
    if (!(spacing[a] > 0) || !std::isfinite(spacing[a]))
      throw Error(where,
                  "spacing[" + std::to_string(a) + "] = " + std::to_string(spacing[a]) +
                      " is not a positive finite number",
                  "pass the voxel size in mm, e.g. {1, 1, 1}");
  }
}

// Scratch for one 1D line of up to n samples: the envelope's parabola vertices v and the
// boundaries z between them (z[k], z[k + 1]) = where parabola v[k] is the lowest.
struct LineScratch {
  std::vector<double> f, d, z;
  std::vector<int64_t> v;
  explicit LineScratch(int64_t n)
      : f(static_cast<size_t>(n)),
        d(static_cast<size_t>(n)),
        z(static_cast<size_t>(n) + 1),
        v(static_cast<size_t>(n)) {}
};

// d[p] = min_q w2 (p - q)² + f[q] by the lower envelope of the parabolas rooted at the finite f[q].
// Infinite samples are no parabola at all (inf - inf in the intersection formula would be NaN);
// with none finite, d is +inf.
void envelope_1d(const double* f, int64_t n, double w2, double* d, int64_t* v, double* z) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == kInf) continue;
    const double fq = f[q] + w2 * static_cast<double>(q * q);
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -kInf;
      z[1] = kInf;
      continue;
    }
    // Drop the parabolas the new one hides. z[0] = -inf, so k never falls below 0.
    double s;
    for (;;) {
      const int64_t p = v[k];
      s = (fq - (f[p] + w2 * static_cast<double>(p * p))) / (2 * w2 * static_cast<double>(q - p));
      if (s > z[k]) break;
      --k;
    }
    ++k;
    v[k] = q;
    z[k] = s;
    z[k + 1] = kInf;
  }
  if (k < 0) {
    std::fill(d, d + n, kInf);
    return;
  }
  k = 0;
  for (int64_t p = 0; p < n; ++p) {
    while (z[k + 1] < static_cast<double>(p)) ++k;
    const double dp = static_cast<double>(p - v[k]);
    d[p] = w2 * dp * dp + f[v[k]];
  }
}

// The feature voxels of every z-line (x, y) as sorted z lists in CSR form: line i = y * nx + x
// holds zs[start[i] .. start[i + 1]). As large as the number of features, which for HD95 is a
// thin surface: no grid-sized intermediate is ever stored.
struct FeatureLines {
  std::vector<int64_t> start;
  std::vector<int32_t> zs;
};

void check_nz(int64_t nz) {
  if (nz > std::numeric_limits<int32_t>::max())
    throw Error("distance transform", "nz = " + std::to_string(nz) + " does not fit in 32 bits");
}

// From a mask: two sweeps over whole planes (contiguous memory), counting then filling.
FeatureLines lines_from_mask(const uint8_t* features, const std::array<int64_t, 3>& dim) {
  const int64_t n_plane = dim[0] * dim[1], nz = dim[2];
  check_nz(nz);
  FeatureLines fl;
  fl.start.assign(static_cast<size_t>(n_plane) + 1, 0);
  for (int64_t z = 0; z < nz; ++z) {
    const uint8_t* fz = features + z * n_plane;
    for (int64_t i = 0; i < n_plane; ++i) fl.start[i + 1] += fz[i] != 0;
  }
  for (int64_t i = 0; i < n_plane; ++i) fl.start[i + 1] += fl.start[i];
  fl.zs.resize(static_cast<size_t>(fl.start[n_plane]));
  std::vector<int64_t> pos(fl.start.begin(), fl.start.end() - 1);
  for (int64_t z = 0; z < nz; ++z) {
    const uint8_t* fz = features + z * n_plane;
    for (int64_t i = 0; i < n_plane; ++i)
      if (fz[i]) fl.zs[pos[i]++] = static_cast<int32_t>(z);
  }
  return fl;
}

// From voxel indices in increasing order (hence increasing z within each line).
FeatureLines lines_from_voxels(const std::vector<int64_t>& voxels,
                               const std::array<int64_t, 3>& dim) {
  const int64_t n_plane = dim[0] * dim[1];
  check_nz(dim[2]);
  FeatureLines fl;
  fl.start.assign(static_cast<size_t>(n_plane) + 1, 0);
  for (int64_t v : voxels) ++fl.start[v % n_plane + 1];
  for (int64_t i = 0; i < n_plane; ++i) fl.start[i + 1] += fl.start[i];
  fl.zs.resize(voxels.size());
  std::vector<int64_t> pos(fl.start.begin(), fl.start.end() - 1);
  for (int64_t v : voxels) fl.zs[pos[v % n_plane]++] = static_cast<int32_t>(v / n_plane);
  return fl;
}

// The transform one z-plane at a time, in increasing z.
//
// Pass order z, y, x. The z pass needs, per voxel, the nearest feature at or below and at or above
// it in its z-line: a cursor per line walks the line's sorted feature list as z increases. Each
// plane then gets its y and x passes on a buffer that stays in cache, and only the planes and rows
// that hold a query need be transformed at all.
class PlaneTransform {
 public:
  PlaneTransform(const FeatureLines& lines, const std::array<int64_t, 3>& dim,
                 const std::array<double, 3>& spacing)
      : lines_(lines),
        nx_(dim[0]),
        ny_(dim[1]),
        w2_{spacing[0] * spacing[0], spacing[1] * spacing[1], spacing[2] * spacing[2]},
        cursor_(lines.start.begin(), lines.start.end() - 1),
        plane_(static_cast<size_t>(nx_ * ny_)),
        out_(plane_.size()),
        scratch_(std::max(nx_, ny_)) {}

  // Squared distances (mm²) of plane z, nx * ny values, x fastest. z must increase from call to
  // call. With `rows_needed`, rows y where rows_needed[y] == 0 are skipped and left stale.
  const double* run(int64_t z, const uint8_t* rows_needed = nullptr) {
    const int64_t nx = nx_, ny = ny_, n_plane = nx * ny;
    const std::vector<int64_t>& start = lines_.start;
    const std::vector<int32_t>& zs = lines_.zs;
    LineScratch& s = scratch_;

    // Pass z: the nearer of the line's features at or below z and at or above it.
    for (int64_t i = 0; i < n_plane; ++i) {
      const int64_t end = start[i + 1];
      int64_t c = cursor_[i];
      while (c < end && zs[c] < z) ++c;  // first feature z' >= z
      cursor_[i] = c;
      int64_t dz = -1;
      if (c < end) dz = zs[c] - z;
      if (c > start[i] && (dz < 0 || z - zs[c - 1] < dz)) dz = z - zs[c - 1];
      plane_[i] = dz < 0 ? kInf : static_cast<double>(dz * dz) * w2_[2];
    }
    // Pass y: every column, since any x may be nearest to a needed row.
    if (ny > 1) {
      for (int64_t x = 0; x < nx; ++x) {
        for (int64_t y = 0; y < ny; ++y) s.f[y] = plane_[y * nx + x];
        envelope_1d(s.f.data(), ny, w2_[1], s.d.data(), s.v.data(), s.z.data());
        for (int64_t y = 0; y < ny; ++y) plane_[y * nx + x] = s.d[y];
      }
    }
    // Pass x: rows are contiguous, no gather needed.
    for (int64_t y = 0; y < ny; ++y) {
      if (rows_needed && !rows_needed[y]) continue;
      envelope_1d(plane_.data() + y * nx, nx, w2_[0], out_.data() + y * nx, s.v.data(), s.z.data());
    }
    return out_.data();
  }

 private:
  const FeatureLines& lines_;
  int64_t nx_, ny_;
  std::array<double, 3> w2_;     // squared spacing per axis
  std::vector<int64_t> cursor_;  // per z-line: first feature at or above the last plane run
  std::vector<double> plane_, out_;
  LineScratch scratch_;
};

// Squared distances at `queries` (increasing voxel indices): only their planes and rows are run.
std::vector<double> transform_at(const FeatureLines& lines, const std::vector<int64_t>& queries,
                                 const std::array<int64_t, 3>& dim,
                                 const std::array<double, 3>& spacing) {
  const int64_t nx = dim[0], n_plane = dim[0] * dim[1];
  PlaneTransform t(lines, dim, spacing);
  std::vector<uint8_t> rows_needed(static_cast<size_t>(dim[1]));
  std::vector<double> out;
  out.reserve(queries.size());
  for (size_t q = 0; q < queries.size();) {
    const int64_t z = queries[q] / n_plane;
    size_t end = q;
    std::fill(rows_needed.begin(), rows_needed.end(), 0);
    for (; end < queries.size() && queries[end] / n_plane == z; ++end)
      rows_needed[static_cast<size_t>(queries[end] % n_plane / nx)] = 1;
    const double* plane = t.run(z, rows_needed.data());
    for (; q < end; ++q) out.push_back(plane[queries[q] % n_plane]);
  }
  return out;
}

void check_voxels(const char* what, const std::vector<int64_t>& voxels, int64_t n) {
  for (size_t i = 0; i < voxels.size(); ++i)
    if (voxels[i] < 0 || voxels[i] >= n || (i > 0 && voxels[i] <= voxels[i - 1]))
      throw Error("squared_edt_at",
                  std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(voxels[i]) +
                      " is out of the grid or out of order",
                  "pass voxel indices (z * ny + y) * nx + x, strictly increasing");
}

}  // namespace

std::vector<double> squared_edt_1d(const std::vector<double>& f, double spacing) {
  check_grid("squared_edt_1d", {static_cast<int64_t>(std::max<size_t>(f.size(), 1)), 1, 1},
             {spacing, 1, 1});
  const auto n = static_cast<int64_t>(f.size());
  LineScratch s(n);
  std::vector<double> d(f.size());
  envelope_1d(f.data(), n, spacing * spacing, d.data(), s.v.data(), s.z.data());
  return d;
}

std::vector<double> squared_edt(const uint8_t* features, const std::array<int64_t, 3>& dim,
                                const std::array<double, 3>& spacing) {
  check_grid("squared_edt", dim, spacing);
  const int64_t n_plane = dim[0] * dim[1];
  const FeatureLines lines = lines_from_mask(features, dim);
  PlaneTransform t(lines, dim, spacing);
  std::vector<double> g(static_cast<size_t>(n_plane * dim[2]));
  for (int64_t z = 0; z < dim[2]; ++z) {
    const double* plane = t.run(z);
    std::copy(plane, plane + n_plane, g.begin() + z * n_plane);
  }
  return g;
}

std::vector<double> squared_edt_at(const uint8_t* features, const uint8_t* queries,
                                   const std::array<int64_t, 3>& dim,
                                   const std::array<double, 3>& spacing) {
  check_grid("squared_edt_at", dim, spacing);
  const int64_t n = dim[0] * dim[1] * dim[2];
  std::vector<int64_t> query_voxels;
  for (int64_t i = 0; i < n; ++i)
    if (queries[i]) query_voxels.push_back(i);
  return transform_at(lines_from_mask(features, dim), query_voxels, dim, spacing);
}

std::vector<double> squared_edt_at(const std::vector<int64_t>& features,
                                   const std::vector<int64_t>& queries,
                                   const std::array<int64_t, 3>& dim,
                                   const std::array<double, 3>& spacing) {
  check_grid("squared_edt_at", dim, spacing);
  const int64_t n = dim[0] * dim[1] * dim[2];
  check_voxels("features", features, n);
  check_voxels("queries", queries, n);
  return transform_at(lines_from_voxels(features, dim), queries, dim, spacing);
}

}  // namespace kdseg
