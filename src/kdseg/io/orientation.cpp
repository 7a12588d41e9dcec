#include "kdseg/io/orientation.h"

#include <cmath>
#include <cstdint>

namespace kdseg {

AxisMap axis_map_to_ras(const Mat44& m) {
  // Greedy assignment as in nibabel's io_orientation: the voxel axis with the largest (normalised)
  // component along a world axis claims it, then the next, so every world axis gets one voxel axis.
  double a[3][3];  // a[world][voxel], columns normalised
  for (int j = 0; j < 3; ++j) {
    double n = std::sqrt(m[0][j] * m[0][j] + m[1][j] * m[1][j] + m[2][j] * m[2][j]);
    for (int i = 0; i < 3; ++i)
      a[i][j] = n > 0 && std::isfinite(n) ? m[i][j] / n : (i == j ? 1.0 : 0.0);
  }
  AxisMap map;
  bool world_used[3] = {false, false, false}, voxel_used[3] = {false, false, false};
  for (int round = 0; round < 3; ++round) {
    // Start from the first free pair so that a degenerate matrix still yields a permutation.
    int best_w = -1, best_v = -1;
    for (int w = 2; w >= 0; --w)
      if (!world_used[w]) best_w = w;
    for (int v = 2; v >= 0; --v)
      if (!voxel_used[v]) best_v = v;
    double best = -1;
    for (int w = 0; w < 3; ++w) {
      if (world_used[w]) continue;
      for (int v = 0; v < 3; ++v) {
        if (voxel_used[v]) continue;
        if (std::fabs(a[w][v]) > best) best = std::fabs(a[w][v]), best_w = w, best_v = v;
      }
    }
    world_used[best_w] = voxel_used[best_v] = true;
    map.perm[best_w] = best_v;
    map.flip[best_w] = a[best_w][best_v] < 0;
  }
  return map;
}

std::string axis_codes(const Mat44& m) {
  // For each voxel axis, the world direction it points to.
  AxisMap map = axis_map_to_ras(m);
  const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
  std::string s(3, '?');
  for (int w = 0; w < 3; ++w) s[map.perm[w]] = map.flip[w] ? neg[w] : pos[w];
  return s;
}

namespace {

// Copies between file order and canonical order. For a canonical index c, the file index along
// file axis perm[a] is c[a] (or its mirror when flip[a]).
template <class T>
void remap(const T* in, const std::array<int64_t, 3>& file_dim, int64_t n_channels,
           const AxisMap& map, T* out, bool to_canon) {
  const int64_t file_stride[3] = {1, file_dim[0], file_dim[0] * file_dim[1]};
  const int64_t n = file_dim[0] * file_dim[1] * file_dim[2];
  int64_t cd[3], step[3], start = 0;
  for (int a = 0; a < 3; ++a) {
    cd[a] = file_dim[map.perm[a]];
    step[a] = map.flip[a] ? -file_stride[map.perm[a]] : file_stride[map.perm[a]];
    if (map.flip[a]) start += (cd[a] - 1) * file_stride[map.perm[a]];
  }
  for (int64_t ch = 0; ch < n_channels; ++ch) {
    const int64_t base = ch * n;
    int64_t o = base;
    for (int64_t z = 0; z < cd[2]; ++z) {
      for (int64_t y = 0; y < cd[1]; ++y) {
        int64_t f = base + start + z * step[2] + y * step[1];
        if (to_canon) {
          for (int64_t x = 0; x < cd[0]; ++x, f += step[0]) out[o++] = in[f];
        } else {
          for (int64_t x = 0; x < cd[0]; ++x, f += step[0]) out[f] = in[o++];
        }
      }
    }
  }
}

}  // namespace

template <class T>
void to_canonical(const T* in, const std::array<int64_t, 3>& file_dim, int64_t n_channels,
                  const AxisMap& map, T* out, std::array<int64_t, 3>& out_dim) {
  for (int a = 0; a < 3; ++a) out_dim[a] = file_dim[map.perm[a]];
  remap(in, file_dim, n_channels, map, out, true);
}

template <class T>
void from_canonical(const T* in, const std::array<int64_t, 3>& canon_dim, int64_t n_channels,
                    const AxisMap& map, T* out, std::array<int64_t, 3>& file_dim) {
  for (int a = 0; a < 3; ++a) file_dim[map.perm[a]] = canon_dim[a];
  remap(in, file_dim, n_channels, map, out, false);
}

template void to_canonical(const float*, const std::array<int64_t, 3>&, int64_t, const AxisMap&,
                           float*, std::array<int64_t, 3>&);
template void to_canonical(const uint8_t*, const std::array<int64_t, 3>&, int64_t, const AxisMap&,
                           uint8_t*, std::array<int64_t, 3>&);
template void from_canonical(const float*, const std::array<int64_t, 3>&, int64_t, const AxisMap&,
                             float*, std::array<int64_t, 3>&);
template void from_canonical(const uint8_t*, const std::array<int64_t, 3>&, int64_t, const AxisMap&,
                             uint8_t*, std::array<int64_t, 3>&);

}  // namespace kdseg
