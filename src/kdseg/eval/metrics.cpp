#include "kdseg/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kdseg/eval/box.h"
#include "kdseg/eval/distance.h"
#include "kdseg/eval/summary.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
using Dim = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

// ---------------------------------------------------------------- labels

// Region membership of every byte value: bit r set if the label is in region r.
constexpr uint8_t bit(Region r) {
  return static_cast<uint8_t>(1u << static_cast<unsigned>(r));
}
struct LabelTable {
  std::array<uint8_t, 256> bits{};
  constexpr LabelTable() {
    bits[1] = bit(Region::WT) | bit(Region::TC);
    bits[2] = bit(Region::WT);
    bits[4] = bit(Region::WT) | bit(Region::TC) | bit(Region::ET);
  }
};
constexpr LabelTable kLabelTable;

// Outside {0, 1, 2, 4}; written without branches so that a scan over a row vectorizes.
inline bool bad_label(uint8_t v) {
  return (v > 4) | (v == 3);
}

[[noreturn]] void throw_bad_label(const char* where, const uint8_t* labels, int64_t n,
                                  const Dim* dim) {
  int64_t i = 0;
  while (i < n && !bad_label(labels[i])) ++i;
  std::string at = "voxel " + std::to_string(i);
  if (dim)
    at += " (x, y, z = " + std::to_string(i % (*dim)[0]) + ", " +
          std::to_string(i / (*dim)[0] % (*dim)[1]) + ", " +
          std::to_string(i / ((*dim)[0] * (*dim)[1])) + ")";
  throw Error(where, at + " has label " + std::to_string(labels[i]) + ", not one of {0, 1, 2, 4}",
              "convert the labels to kdseg's internal BraTS convention first (BraTS 2023 and MSD "
              "files number the classes differently)");
}

// ---------------------------------------------------------------- grids and boxes

void check_dim(const char* where, const Dim& dim) {
  for (int a = 0; a < 3; ++a)
    if (dim[a] <= 0)
      throw Error(where,
                  "dim[" + std::to_string(a) + "] = " + std::to_string(dim[a]) + " is not positive",
                  "pass the grid size {nx, ny, nz} in voxels");
}

void check_grid(const char* where, const Dim& dim, const Spacing& spacing) {
  check_dim(where, dim);
  for (int a = 0; a < 3; ++a)
    if (!(spacing[a] > 0) || !std::isfinite(spacing[a]))
      throw Error(where,
                  "spacing[" + std::to_string(a) + "] = " + std::to_string(spacing[a]) +
                      " is not a positive finite number",
                  "pass the voxel size in mm, e.g. {1, 1, 1}");
}

using Box = VoxelBox;

Box box_union(Box a, const Box& b) {
  a.add(b);
  return a;
}

// Grows `box` by the nonzero voxels of one row. The OR over the row vectorizes; only rows that
// hold something are searched for their ends.
inline void add_row_extent(const uint8_t* row, int64_t nx, int64_t y, int64_t z, Box& box) {
  uint8_t any = 0;
  for (int64_t x = 0; x < nx; ++x) any |= row[x];
  if (any) {
    int64_t x0 = 0, x1 = nx;
    while (!row[x0]) ++x0;
    while (!row[x1 - 1]) --x1;
    box.add_row(x0, x1, y, z);
  }
}

}  // namespace

Box bounding_box(const uint8_t* mask, const Dim& dim) {
  Box b;
  for (int64_t z = 0; z < dim[2]; ++z)
    for (int64_t y = 0; y < dim[1]; ++y)
      add_row_extent(mask + (z * dim[1] + y) * dim[0], dim[0], y, z, b);
  return b;
}

namespace {

// Calls f(j) for every boundary voxel (boundary_mask) of `mask` inside `box`, j its index on the
// box's grid, in increasing order. Neighbours are looked up in the whole grid, so these are the
// full-grid boundary voxels that fall in the box.
template <class F>
void for_each_boundary_voxel(const uint8_t* mask, const Dim& dim, const Box& box, F f) {
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2], n_plane = nx * ny;
  int64_t j = 0;
  for (int64_t z = box.lo[2]; z < box.hi[2]; ++z)
    for (int64_t y = box.lo[1]; y < box.hi[1]; ++y)
      for (int64_t x = box.lo[0]; x < box.hi[0]; ++x, ++j) {
        const int64_t i = (z * ny + y) * nx + x;
        if (!mask[i]) continue;
        // Grid faces first: short-circuiting keeps the neighbour reads inside the buffer.
        if (x == 0 || x == nx - 1 || y == 0 || y == ny - 1 || z == 0 || z == nz - 1 ||
            !mask[i - 1] || !mask[i + 1] || !mask[i - nx] || !mask[i + nx] || !mask[i - n_plane] ||
            !mask[i + n_plane])
          f(j);
      }
}

std::vector<int64_t> boundary_voxels(const uint8_t* mask, const Dim& dim, const Box& box) {
  std::vector<int64_t> v;
  for_each_boundary_voxel(mask, dim, box, [&](int64_t j) { v.push_back(j); });
  return v;
}

// Distances (mm) from each voxel of boundary `from` to the nearest voxel of boundary `to`, both
// as voxel lists on the box holding both masks. Exact: every boundary voxel of either mask lies in
// its own bounding box, hence in the box, and on a box the separable EDT is the exact minimum over
// the features it holds; nothing outside the box is a feature.
std::vector<double> directed_distances(const std::vector<int64_t>& from,
                                       const std::vector<int64_t>& to, const Box& box,
                                       const Spacing& spacing) {
  std::vector<double> d = squared_edt_at(to, from, box.size(), spacing);
  for (double& v : d) v = std::sqrt(v);
  return d;
}

// score_region with `n_outside` more true negatives: the voxels of a larger grid that were
// cropped away because neither mask reaches them.
RegionMetrics score_region_in(const uint8_t* pred, const uint8_t* ref, const Dim& dim,
                              const Spacing& spacing, int64_t n_outside) {
  Confusion c = confusion(pred, ref, dim[0] * dim[1] * dim[2]);
  c.tn += n_outside;
  const double voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0;
  RegionMetrics r;
  r.dice = dice(c);
  r.hd95 = hd95(pred, ref, dim, spacing);
  r.sensitivity = sensitivity(c);
  r.specificity = specificity(c);
  r.volume_pred_ml = static_cast<double>(c.tp + c.fp) * voxel_ml;
  r.volume_ref_ml = static_cast<double>(c.tp + c.fn) * voxel_ml;
  return r;
}

}  // namespace

// ---------------------------------------------------------------- regions

const char* region_name(Region r) {
  switch (r) {
    case Region::ET:
      return "ET";
    case Region::WT:
      return "WT";
    case Region::TC:
      return "TC";
  }
  return "?";
}

const char* region_key(Region r) {
  switch (r) {
    case Region::ET:
      return "et";
    case Region::WT:
      return "wt";
    case Region::TC:
      return "tc";
  }
  return "?";
}

std::vector<uint8_t> region_mask(const uint8_t* labels, int64_t n, Region r) {
  const uint8_t want = bit(r);
  std::vector<uint8_t> out(static_cast<size_t>(n));
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    bad |= bad_label(labels[i]);
    out[static_cast<size_t>(i)] = (kLabelTable.bits[labels[i]] & want) != 0;
  }
  if (bad) throw_bad_label("labels", labels, n, nullptr);
  return out;
}

// ---------------------------------------------------------------- overlap metrics

Confusion confusion(const uint8_t* pred, const uint8_t* ref, int64_t n) {
  // Count the four cells of the 2x2 table by (pred, ref) index: no branches.
  std::array<int64_t, 4> cells{};
  for (int64_t i = 0; i < n; ++i) ++cells[(pred[i] != 0) * 2 + (ref[i] != 0)];
  Confusion c;
  c.tn = cells[0];
  c.fn = cells[1];
  c.fp = cells[2];
  c.tp = cells[3];
  return c;
}

double dice(const Confusion& c) {
  const int64_t denom = 2 * c.tp + c.fp + c.fn;
  return denom == 0 ? 1.0 : 2.0 * static_cast<double>(c.tp) / static_cast<double>(denom);
}
double dice(const uint8_t* pred, const uint8_t* ref, int64_t n) {
  return dice(confusion(pred, ref, n));
}

double sensitivity(const Confusion& c) {
  const int64_t pos = c.tp + c.fn;
  return pos == 0 ? kNaN : static_cast<double>(c.tp) / static_cast<double>(pos);
}
double sensitivity(const uint8_t* pred, const uint8_t* ref, int64_t n) {
  return sensitivity(confusion(pred, ref, n));
}

double specificity(const Confusion& c) {
  const int64_t neg = c.tn + c.fp;
  return neg == 0 ? kNaN : static_cast<double>(c.tn) / static_cast<double>(neg);
}
double specificity(const uint8_t* pred, const uint8_t* ref, int64_t n) {
  return specificity(confusion(pred, ref, n));
}

double volume_ml(const uint8_t* mask, int64_t n, const Spacing& spacing) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += mask[i] != 0;
  return static_cast<double>(count) * spacing[0] * spacing[1] * spacing[2] / 1000.0;
}

// ---------------------------------------------------------------- surface distance

std::vector<uint8_t> boundary_mask(const uint8_t* mask, const Dim& dim) {
  check_dim("boundary_mask", dim);
  Box all;
  all.hi = dim;
  std::vector<uint8_t> out(static_cast<size_t>(all.n_voxels()), 0);
  for_each_boundary_voxel(mask, dim, all, [&](int64_t j) { out[static_cast<size_t>(j)] = 1; });
  return out;
}

std::vector<double> boundary_distances(const uint8_t* from, const uint8_t* to, const Dim& dim,
                                       const Spacing& spacing) {
  check_grid("boundary_distances", dim, spacing);
  const Box from_box = bounding_box(from, dim);
  if (from_box.empty()) return {};
  const Box box = box_union(from_box, bounding_box(to, dim));
  return directed_distances(boundary_voxels(from, dim, box), boundary_voxels(to, dim, box), box,
                            spacing);
}

double hd95(const uint8_t* pred, const uint8_t* ref, const Dim& dim, const Spacing& spacing) {
  check_grid("hd95", dim, spacing);
  const Box pred_box = bounding_box(pred, dim);
  const Box ref_box = bounding_box(ref, dim);
  if (pred_box.empty() && ref_box.empty()) return 0.0;
  if (pred_box.empty() || ref_box.empty()) return kHd95Empty;
  const Box box = box_union(pred_box, ref_box);
  const std::vector<int64_t> pred_boundary = boundary_voxels(pred, dim, box);
  const std::vector<int64_t> ref_boundary = boundary_voxels(ref, dim, box);
  const double pred_to_ref =
      percentile(directed_distances(pred_boundary, ref_boundary, box, spacing), 95);
  const double ref_to_pred =
      percentile(directed_distances(ref_boundary, pred_boundary, box, spacing), 95);
  return std::max(pred_to_ref, ref_to_pred);
}

// ---------------------------------------------------------------- per-case scoring

RegionMetrics score_region(const uint8_t* pred_mask, const uint8_t* ref_mask, const Dim& dim,
                           const Spacing& spacing) {
  check_grid("score_region", dim, spacing);
  return score_region_in(pred_mask, ref_mask, dim, spacing, 0);
}

std::vector<std::string> metric_columns() {
  std::vector<std::string> cols;
  for (const char* metric : {"dice", "hd95", "sens", "spec"})
    for (Region r : kRegions) cols.push_back(std::string(metric) + "_" + region_key(r));
  for (const char* which : {"vol_pred", "vol_ref"})
    for (Region r : kRegions) cols.push_back(std::string(which) + "_" + region_key(r) + "_ml");
  return cols;
}

std::vector<double> CaseMetrics::values() const {
  // Same loops as metric_columns(), with the field in place of the name.
  using Field = double RegionMetrics::*;
  std::vector<double> v;
  for (Field f :
       {&RegionMetrics::dice, &RegionMetrics::hd95, &RegionMetrics::sensitivity,
        &RegionMetrics::specificity, &RegionMetrics::volume_pred_ml, &RegionMetrics::volume_ref_ml})
    for (Region r : kRegions) v.push_back((*this)[r].*f);
  return v;
}

CaseMetrics score_case(const uint8_t* pred_labels, const uint8_t* ref_labels, const Dim& dim,
                       const Spacing& spacing) {
  check_grid("score_case", dim, spacing);
  const int64_t nx = dim[0], ny = dim[1], nz = dim[2], n = nx * ny * nz;

  // One pass over both maps: check the labels and find the box holding every tumour voxel of
  // either. Outside it both maps are background, so every region is scored on the box alone
  // (a tumour is a few percent of a BraTS grid): the voxels cropped away are true negatives, and
  // no boundary moves, since a mask voxel on a face of the box has background beyond it.
  Box box;
  bool bad_pred = false, bad_ref = false;
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < ny; ++y) {
      const uint8_t* p = pred_labels + (z * ny + y) * nx;
      const uint8_t* r = ref_labels + (z * ny + y) * nx;
      for (int64_t x = 0; x < nx; ++x) {
        bad_pred |= bad_label(p[x]);
        bad_ref |= bad_label(r[x]);
      }
      add_row_extent(p, nx, y, z, box);
      add_row_extent(r, nx, y, z, box);
    }
  if (bad_pred) throw_bad_label("prediction labels", pred_labels, n, &dim);
  if (bad_ref) throw_bad_label("reference labels", ref_labels, n, &dim);

  CaseMetrics cm;
  if (box.empty()) {  // no tumour in either: every region is "both empty", on one voxel + the rest
    for (Region r : kRegions) {
      const uint8_t none = 0;
      cm[r] = score_region_in(&none, &none, {1, 1, 1}, spacing, n - 1);
    }
    return cm;
  }
  const Dim m = box.size();
  std::vector<uint8_t> pred(static_cast<size_t>(box.n_voxels())), ref(pred.size());
  for (Region region : kRegions) {
    const uint8_t want = bit(region);
    size_t j = 0;
    for (int64_t z = box.lo[2]; z < box.hi[2]; ++z)
      for (int64_t y = box.lo[1]; y < box.hi[1]; ++y) {
        const int64_t row = (z * ny + y) * nx;
        for (int64_t x = box.lo[0]; x < box.hi[0]; ++x, ++j) {
          pred[j] = (kLabelTable.bits[pred_labels[row + x]] & want) != 0;
          ref[j] = (kLabelTable.bits[ref_labels[row + x]] & want) != 0;
        }
      }
    cm[region] = score_region_in(pred.data(), ref.data(), m, spacing, n - box.n_voxels());
  }
  return cm;
}

CaseMetrics score_case(const LabelMap& pred, const LabelMap& ref) {
  const auto grid = [](const Dim& d) {
    return std::to_string(d[0]) + "x" + std::to_string(d[1]) + "x" + std::to_string(d[2]);
  };
  if (pred.dim != ref.dim)
    throw Error("score_case",
                "prediction is " + grid(pred.dim) + " voxels, reference " + grid(ref.dim),
                "score a prediction written on the reference's grid (resample it first)");
  for (const LabelMap* img : {&pred, &ref})
    if (img->n_channels != 1 || img->data.size() != static_cast<size_t>(img->n_voxels()))
      throw Error("score_case",
                  std::string(img == &pred ? "prediction" : "reference") +
                      " is not a single-channel label map of " + grid(img->dim),
                  "pass one 3D label map per case");
  for (int a = 0; a < 3; ++a)
    if (std::abs(pred.spacing[a] - ref.spacing[a]) > 1e-3)
      throw Error("score_case",
                  "spacing differs on axis " + std::to_string(a) + ": prediction " +
                      std::to_string(pred.spacing[a]) + " mm, reference " +
                      std::to_string(ref.spacing[a]) + " mm",
                  "score a prediction written on the reference's grid");
  return score_case(pred.data.data(), ref.data.data(), ref.dim, ref.spacing);
}

}  // namespace kdseg
