#pragma once
// A box of voxels and the bounding box of a mask, shared by the whole-volume metrics
// (eval/metrics.cpp) and the lesion-wise ones (eval/lesion.cpp), which both work inside the
// smallest box that holds the masks.
#include <algorithm>
#include <array>
#include <cstdint>

namespace kdseg {

// Half-open box [lo, hi) of voxels on an (x fastest) grid; empty while hi[0] <= lo[0].
struct VoxelBox {
  using Dim = std::array<int64_t, 3>;
  Dim lo{0, 0, 0}, hi{0, 0, 0};
  bool empty() const { return hi[0] <= lo[0]; }
  Dim size() const { return {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}; }
  int64_t n_voxels() const {
    return empty() ? 0 : (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]);
  }
  // Grows the box to hold row (y, z) from x0 to x1 - 1.
  void add_row(int64_t x0, int64_t x1, int64_t y, int64_t z) {
    if (empty()) {
      lo = {x0, y, z};
      hi = {x1, y + 1, z + 1};
      return;
    }
    lo = {std::min(lo[0], x0), std::min(lo[1], y), std::min(lo[2], z)};
    hi = {std::max(hi[0], x1), std::max(hi[1], y + 1), std::max(hi[2], z + 1)};
  }
  void add(int64_t x, int64_t y, int64_t z) { add_row(x, x + 1, y, z); }
  void add(const VoxelBox& b) {
    if (b.empty()) return;
    if (empty()) {
      *this = b;
      return;
    }
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::min(lo[a], b.lo[a]);
      hi[a] = std::max(hi[a], b.hi[a]);
    }
  }
  // Grown by `r` voxels on every side, inside [0, dim).
  VoxelBox grown(int64_t r, const Dim& dim) const {
    VoxelBox g;
    for (int a = 0; a < 3; ++a) {
      g.lo[a] = std::max<int64_t>(0, lo[a] - r);
      g.hi[a] = std::min<int64_t>(dim[a], hi[a] + r);
    }
    return g;
  }
};

// The smallest box holding every nonzero voxel of `mask` (a grid of `dim`); empty if none.
VoxelBox bounding_box(const uint8_t* mask, const VoxelBox::Dim& dim);

}  // namespace kdseg
