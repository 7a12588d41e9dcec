#pragma once
// Exact Euclidean distance transform on an anisotropic voxel grid.
//
// Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled Functions" (Theory of Computing,
// 2012): the squared EDT is separable, so it is one 1D pass per axis, each taking the lower
// envelope of parabolas in O(n). Exact (no chamfer or vector-propagation approximation), linear in
// the number of voxels, and the spacing enters as a per-axis weight. Used for HD95 (metrics.h).
//
// Grids are raw buffers, x fastest: index = (z * ny + y) * nx + x, dim = {nx, ny, nz}, spacing in
// mm per axis (as kdseg::Image). A voxel is a feature / a query where its byte is nonzero.
#include <array>
#include <cstdint>
#include <vector>

namespace kdseg {

// Squared distance (mm²) from every voxel to the nearest feature voxel; +inf everywhere when there
// is no feature. Throws kdseg::Error for a non-positive dim or spacing.
std::vector<double> squared_edt(const uint8_t* features, const std::array<int64_t, 3>& dim,
                                const std::array<double, 3>& spacing);

// Squared distance (mm²) from each query voxel to the nearest feature voxel, in index order of the
// query voxels. Same values as squared_edt() read at the queries, but only the planes and rows
// that hold a query are transformed, which skips most of the grid when the queries are a surface.
std::vector<double> squared_edt_at(const uint8_t* features, const uint8_t* queries,
                                   const std::array<int64_t, 3>& dim,
                                   const std::array<double, 3>& spacing);
// The same on voxel lists: indices (z * ny + y) * nx + x, strictly increasing (throws otherwise).
// The form HD95 uses: a boundary is a short list, and no grid-sized buffer is needed at all.
std::vector<double> squared_edt_at(const std::vector<int64_t>& features,
                                   const std::vector<int64_t>& queries,
                                   const std::array<int64_t, 3>& dim,
                                   const std::array<double, 3>& spacing);

// One axis of the transform: d[p] = min_q (spacing * (p - q))² + f[q], f[q] = +inf allowed (no
// feature at q). Exposed for tests; the 3D transforms run it line by line on scratch buffers.
std::vector<double> squared_edt_1d(const std::vector<double>& f, double spacing);

}  // namespace kdseg
