#include "kdseg/eval/lesion.h"

#include <algorithm>
#include <cmath>

#include "kdseg/eval/box.h"
#include "kdseg/eval/metrics.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace {

using Dim = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

using Box = VoxelBox;

// Calls f(x, y, z, i) for every voxel of `box` on a grid of `dim`, i its index on that grid.
template <class F>
void for_each_voxel(const Box& box, const Dim& dim, F f) {
  for (int64_t z = box.lo[2]; z < box.hi[2]; ++z)
    for (int64_t y = box.lo[1]; y < box.hi[1]; ++y)
      for (int64_t x = box.lo[0]; x < box.hi[0]; ++x) f(x, y, z, (z * dim[1] + y) * dim[0] + x);
}

// The voxels of `box` (on a grid of `dim`) copied out, x fastest, as a grid of box.size().
template <class T>
std::vector<T> crop(const T* data, const Dim& dim, const Box& box) {
  std::vector<T> out;
  out.reserve(static_cast<size_t>(box.n_voxels()));
  for_each_voxel(box, dim, [&](int64_t, int64_t, int64_t, int64_t i) { out.push_back(data[i]); });
  return out;
}

void check_grid(const char* where, const Dim& dim, const Spacing* spacing) {
  for (int a = 0; a < 3; ++a)
    if (dim[a] <= 0)
      throw Error(
          where, "dim[" + std::to_string(a) + "] = " + std::to_string(dim[a]) + " is not positive");
  if (spacing)
    for (int a = 0; a < 3; ++a)
      if (!((*spacing)[a] > 0) || !std::isfinite((*spacing)[a]))
        throw Error(where, "spacing[" + std::to_string(a) + "] = " + std::to_string((*spacing)[a]) +
                               " is not a positive finite number");
}

// The 26 and the 18 neighbours, as offsets.
struct Offsets {
  std::vector<std::array<int, 3>> n26, n18;
  Offsets() {
    for (int dz = -1; dz <= 1; ++dz)
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int l1 = std::abs(dx) + std::abs(dy) + std::abs(dz);
          if (l1 == 0) continue;
          n26.push_back({dx, dy, dz});
          if (l1 <= 2) n18.push_back({dx, dy, dz});
        }
  }
};
const Offsets kOffsets;

// A component of the prediction: its voxel count and box.
struct Component {
  int64_t n_voxels = 0;
  Box box;
};

}  // namespace

std::vector<int32_t> connected_components(const uint8_t* mask, const Dim& dim,
                                          int32_t* n_components) {
  check_grid("connected_components", dim, nullptr);
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2], n = nx * ny * nz;
  std::vector<int32_t> label(static_cast<size_t>(n), 0);
  std::vector<int64_t> stack;
  int32_t next = 0;
  for (int64_t start = 0; start < n; ++start) {
    if (!mask[start] || label[start]) continue;
    label[start] = ++next;
    stack.push_back(start);
    while (!stack.empty()) {  // flood fill from the component's first voxel
      const int64_t i = stack.back();
      stack.pop_back();
      const int64_t x = i % nx, y = i / nx % ny, z = i / (nx * ny);
      for (const auto& d : kOffsets.n26) {
        const int64_t u = x + d[0], v = y + d[1], w = z + d[2];
        if (u < 0 || u >= nx || v < 0 || v >= ny || w < 0 || w >= nz) continue;
        const int64_t j = (w * ny + v) * nx + u;
        if (mask[j] && !label[j]) {
          label[j] = next;
          stack.push_back(j);
        }
      }
    }
  }
  if (n_components) *n_components = next;
  return label;
}

std::vector<uint8_t> dilate18(const uint8_t* mask, const Dim& dim, int iterations) {
  check_grid("dilate18", dim, nullptr);
  if (iterations < 0)
    throw Error("dilate18", "iterations = " + std::to_string(iterations) + " is negative");
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2], n = nx * ny * nz;
  std::vector<uint8_t> cur(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) cur[i] = mask[i] != 0;
  // Each pass sets the 18 neighbours of the voxels the previous pass added (the front): earlier
  // voxels' neighbours are set already.
  std::vector<int64_t> front;
  for (int64_t i = 0; i < n; ++i)
    if (cur[i]) front.push_back(i);
  std::vector<int64_t> added;
  for (int it = 0; it < iterations && !front.empty(); ++it) {
    added.clear();
    for (int64_t i : front) {
      const int64_t x = i % nx, y = i / nx % ny, z = i / (nx * ny);
      for (const auto& d : kOffsets.n18) {
        const int64_t u = x + d[0], v = y + d[1], w = z + d[2];
        if (u < 0 || u >= nx || v < 0 || v >= ny || w < 0 || w >= nz) continue;
        const int64_t j = (w * ny + v) * nx + u;
        if (!cur[j]) {
          cur[j] = 1;
          added.push_back(j);
        }
      }
    }
    front.swap(added);
  }
  return cur;
}

LesionScores lesion_wise(const uint8_t* pred_full, const uint8_t* ref_full, const Dim& dim_full,
                         const Spacing& spacing, const LesionOptions& opt) {
  check_grid("lesion_wise", dim_full, &spacing);
  if (opt.dilation < 0)
    throw Error("lesion_wise", "dilation = " + std::to_string(opt.dilation) + " is negative",
                "pass 0 (no joining) or more voxels, e.g. 3 as BraTS-GLI");
  if (!(opt.min_volume_mm3 >= 0))
    throw Error("lesion_wise",
                "min_volume_mm3 = " + std::to_string(opt.min_volume_mm3) + " is not a volume",
                "pass 0 (keep every lesion) or more, e.g. 50");
  LesionScores out;
  // Everything happens in the box of both masks. Nothing is lost: every component lies in it,
  // and a dilation cut at its faces joins and matches the same voxels as one cut at the grid's,
  // since moving a point of a dilation onto the box (clamping each coordinate) keeps it within
  // reach of the same mask voxels and keeps neighbours neighbours.
  Box box = bounding_box(pred_full, dim_full);
  box.add(bounding_box(ref_full, dim_full));
  if (box.empty()) return out;  // both empty: Dice 1, HD95 0
  const Dim dim = box.size();
  const std::vector<uint8_t> pred = crop(pred_full, dim_full, box),
                             ref = crop(ref_full, dim_full, box);
  const int64_t n = box.n_voxels();
  Box all;
  all.hi = dim;

  // Predicted components, with their sizes and boxes.
  int32_t n_pred = 0;
  const std::vector<int32_t> pred_cc = connected_components(pred.data(), dim, &n_pred);
  std::vector<Component> comps(static_cast<size_t>(n_pred) + 1);
  for_each_voxel(all, dim, [&](int64_t x, int64_t y, int64_t z, int64_t i) {
    if (const int32_t c = pred_cc[i]) {
      ++comps[c].n_voxels;
      comps[c].box.add(x, y, z);
    }
  });

  // Lesions: the reference's components joined through the dilated reference, numbered by their
  // first voxel in index order.
  int32_t n_joined = 0;
  const std::vector<int32_t> joined =
      connected_components(dilate18(ref.data(), dim, opt.dilation).data(), dim, &n_joined);
  std::vector<int32_t> lesion_of_joined(static_cast<size_t>(n_joined) + 1, 0);
  std::vector<int32_t> lesion(static_cast<size_t>(n), 0);
  std::vector<Box> lesion_box;
  int32_t n_lesions = 0;
  for_each_voxel(all, dim, [&](int64_t x, int64_t y, int64_t z, int64_t i) {
    if (!ref[i]) return;
    int32_t& l = lesion_of_joined[joined[i]];
    if (!l) {
      l = ++n_lesions;
      lesion_box.emplace_back();
    }
    lesion[i] = l;
    lesion_box[l - 1].add(x, y, z);
  });

  const double voxel_mm3 = spacing[0] * spacing[1] * spacing[2];
  std::vector<uint8_t> matched_any(comps.size(), 0), matched(comps.size(), 0);
  std::vector<int32_t> matched_ids;
  double dice_sum = 0, hd95_sum = 0;
  int n_kept = 0;
  for (int32_t l = 1; l <= n_lesions; ++l) {
    LesionMatch m;
    // The lesion dilated, on its box grown by the dilation: the components it meets match.
    const Box near = lesion_box[l - 1].grown(opt.dilation, dim);
    const Dim near_dim = near.size();
    std::vector<uint8_t> own;
    own.reserve(static_cast<size_t>(near.n_voxels()));
    for_each_voxel(near, dim, [&](int64_t, int64_t, int64_t, int64_t i) {
      own.push_back(lesion[i] == l);
      m.n_voxels += lesion[i] == l;
    });
    const std::vector<uint8_t> reach = dilate18(own.data(), near_dim, opt.dilation);
    matched_ids.clear();
    size_t j = 0;
    for_each_voxel(near, dim, [&](int64_t, int64_t, int64_t, int64_t i) {
      const int32_t c = pred_cc[i];
      if (reach[j++] && c && !matched[c]) {
        matched[c] = 1;
        matched_ids.push_back(c);
      }
    });
    m.volume_mm3 = static_cast<double>(m.n_voxels) * voxel_mm3;
    m.kept = m.volume_mm3 > opt.min_volume_mm3;
    m.n_matched = static_cast<int>(matched_ids.size());
    if (matched_ids.empty()) {
      m.dice = 0;
      m.hd95 = kLesionHd95Missed;
    } else {
      // The lesion against the union of its components, on the box holding both.
      Box both = lesion_box[l - 1];
      for (int32_t c : matched_ids) both.add(comps[c].box);
      std::vector<uint8_t> p, r;
      p.reserve(static_cast<size_t>(both.n_voxels()));
      r.reserve(p.capacity());
      int64_t n_p = 0, n_r = 0, n_both = 0;
      for_each_voxel(both, dim, [&](int64_t, int64_t, int64_t, int64_t i) {
        const bool in_p = pred_cc[i] && matched[pred_cc[i]], in_r = lesion[i] == l;
        p.push_back(in_p);
        r.push_back(in_r);
        n_p += in_p;
        n_r += in_r;
        n_both += in_p && in_r;
      });
      m.dice = 2.0 * static_cast<double>(n_both) / static_cast<double>(n_p + n_r);
      m.hd95 = hd95(p.data(), r.data(), both.size(), spacing);
    }
    for (int32_t c : matched_ids) {
      matched[c] = 0;
      matched_any[c] = 1;
    }
    if (m.kept) {
      ++n_kept;
      dice_sum += m.dice;
      hd95_sum += m.hd95;
      (m.n_matched ? out.n_tp : out.n_fn)++;
    } else {
      ++out.n_small;
    }
    out.lesions.push_back(m);
  }
  for (int32_t c = 1; c <= n_pred; ++c) out.n_fp += !matched_any[c];
  const int terms = n_kept + out.n_fp;
  if (terms > 0) {
    out.dice = dice_sum / terms;
    out.hd95 = (hd95_sum + kLesionHd95Missed * out.n_fp) / terms;
  }
  return out;
}

std::vector<std::string> lesion_metric_columns() {
  std::vector<std::string> cols;
  for (const char* metric : {"lw_dice", "lw_hd95", "lw_tp", "lw_fn", "lw_fp"})
    for (Region r : kRegions) cols.push_back(std::string(metric) + "_" + region_key(r));
  return cols;
}

std::vector<double> CaseLesionMetrics::values() const {
  std::vector<double> v;
  for (int k = 0; k < 5; ++k)
    for (size_t r = 0; r < regions.size(); ++r) {
      const LesionScores& s = regions[r];
      const double x[5] = {s.dice, s.hd95, static_cast<double>(s.n_tp), static_cast<double>(s.n_fn),
                           static_cast<double>(s.n_fp)};
      v.push_back(x[k]);
    }
  return v;
}

CaseLesionMetrics score_case_lesion_wise(const uint8_t* pred_labels, const uint8_t* ref_labels,
                                         const Dim& dim, const Spacing& spacing,
                                         const LesionOptions& opt) {
  check_grid("score_case_lesion_wise", dim, &spacing);
  // The box of every tumour voxel of either map: outside it every region is empty in both, so
  // scoring on the box gives what the whole grid gives (as lesion_wise itself argues), at the
  // cost of the box.
  Box box = bounding_box(pred_labels, dim);
  box.add(bounding_box(ref_labels, dim));
  CaseLesionMetrics cm;
  if (box.empty()) return cm;
  const std::vector<uint8_t> p = crop(pred_labels, dim, box), r = crop(ref_labels, dim, box);
  for (size_t k = 0; k < kRegions.size(); ++k) {
    const std::vector<uint8_t> pm = region_mask(p.data(), box.n_voxels(), kRegions[k]);
    const std::vector<uint8_t> rm = region_mask(r.data(), box.n_voxels(), kRegions[k]);
    cm.regions[k] = lesion_wise(pm.data(), rm.data(), box.size(), spacing, opt);
  }
  return cm;
}

}  // namespace kdseg
