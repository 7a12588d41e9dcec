#include "kdseg/infer/postprocess.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace kdseg {

at::Tensor regions_to_labels(const at::Tensor& probs, double threshold) {
  at::Tensor p = probs.to(at::kFloat);
  at::Tensor labels = at::zeros({p.size(1), p.size(2), p.size(3)}, p.options().dtype(at::kByte));
  labels.masked_fill_(p[0] > threshold, 2);
  labels.masked_fill_(p[1] > threshold, 1);
  labels.masked_fill_(p[2] > threshold, 4);
  return labels;
}

std::vector<int32_t> connected_components(const uint8_t* mask, const std::array<int64_t, 3>& dim,
                                          std::vector<int64_t>* sizes) {
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2], n = nx * ny * nz;
  std::vector<int32_t> comp(static_cast<size_t>(n), 0);
  std::vector<int64_t> stack;
  if (sizes) sizes->assign(1, 0);
  int32_t next = 0;
  for (int64_t seed = 0; seed < n; ++seed) {
    if (!mask[seed] || comp[seed]) continue;
    ++next;
    int64_t count = 0;
    stack.assign(1, seed);
    comp[seed] = next;
    while (!stack.empty()) {
      const int64_t v = stack.back();
      stack.pop_back();
      ++count;
      const int64_t x = v % nx, y = (v / nx) % ny, z = v / (nx * ny);
      for (int64_t dz = -1; dz <= 1; ++dz)
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t X = x + dx, Y = y + dy, Z = z + dz;
            if (X < 0 || Y < 0 || Z < 0 || X >= nx || Y >= ny || Z >= nz) continue;
            const int64_t u = (Z * ny + Y) * nx + X;
            if (mask[u] && !comp[u]) {
              comp[u] = next;
              stack.push_back(u);
            }
          }
    }
    if (sizes) sizes->push_back(count);
  }
  return comp;
}

int64_t postprocess_labels(uint8_t* labels, const std::array<int64_t, 3>& dim,
                           const std::array<double, 3>& spacing, const PostprocessOptions& opt) {
  const int64_t n = dim[0] * dim[1] * dim[2];
  const double voxel_mm3 = spacing[0] * spacing[1] * spacing[2];
  int64_t changed = 0;
  if (opt.min_component_fraction > 0 || opt.min_component_mm3 > 0) {
    std::vector<uint8_t> tumour(static_cast<size_t>(n));
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) total += tumour[i] = labels[i] != 0;
    std::vector<int64_t> sizes;
    const auto comp = connected_components(tumour.data(), dim, &sizes);
    const double min_voxels = std::max(opt.min_component_fraction * static_cast<double>(total),
                                       opt.min_component_mm3 / voxel_mm3);
    for (int64_t i = 0; i < n; ++i)
      if (comp[i] && static_cast<double>(sizes[comp[i]]) < min_voxels) {
        labels[i] = 0;
        ++changed;
      }
  }
  if (opt.et_min_mm3 > 0) {
    int64_t et = 0;
    for (int64_t i = 0; i < n; ++i) et += labels[i] == 4;
    if (et > 0 && static_cast<double>(et) * voxel_mm3 < opt.et_min_mm3)
      for (int64_t i = 0; i < n; ++i)
        if (labels[i] == 4) {
          labels[i] = 1;
          ++changed;
        }
  }
  return changed;
}

}  // namespace kdseg
