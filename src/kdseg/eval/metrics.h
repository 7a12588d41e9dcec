#pragma once
// Segmentation metrics as the BraTS challenge scores them (docs/design.md §5).
//
// Label maps are in kdseg's internal BraTS convention {0, 1, 2, 4} (0 background, 1 necrotic /
// non-enhancing core, 2 oedema, 4 enhancing tumour) and are scored on three nested regions:
//   ET = {4},  WT = {1, 2, 4},  TC = {1, 4};  reported in that order, as BraTS tables are.
//
// Grids are raw buffers, x fastest: index = (z * ny + y) * nx + x, dim = {nx, ny, nz}, spacing in
// mm per axis, so that this file needs only the standard library; the LabelMap overloads at the
// end are thin wrappers. A mask voxel is "in" where its byte is nonzero.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kdseg/io/image.h"

namespace kdseg {

// ---------------------------------------------------------------- regions

enum class Region { ET, WT, TC };
constexpr int kNumRegions = 3;
constexpr std::array<Region, kNumRegions> kRegions{Region::ET, Region::WT, Region::TC};

// "ET", "WT", "TC".
const char* region_name(Region r);
// "et", "wt", "tc": the suffix of the metric columns.
const char* region_key(Region r);

// 1 where the label belongs to the region, else 0. Throws kdseg::Error naming the voxel for a
// label outside {0, 1, 2, 4} (e.g. a BraTS 2023 file whose ET is still 3).
std::vector<uint8_t> region_mask(const uint8_t* labels, int64_t n, Region r);

// ---------------------------------------------------------------- overlap metrics

// Voxel counts of a prediction against a reference, over the whole grid.
struct Confusion {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
};
Confusion confusion(const uint8_t* pred, const uint8_t* ref, int64_t n);

// 2|P∩R| / (|P| + |R|); 1 when both are empty (nothing to find, nothing found), so 0 when exactly
// one is.
double dice(const Confusion& c);
double dice(const uint8_t* pred, const uint8_t* ref, int64_t n);
// TP / (TP + FN); NaN (undefined) when the reference is empty.
double sensitivity(const Confusion& c);
double sensitivity(const uint8_t* pred, const uint8_t* ref, int64_t n);
// TN / (TN + FP) over the whole grid; NaN when the reference covers every voxel.
double specificity(const Confusion& c);
double specificity(const uint8_t* pred, const uint8_t* ref, int64_t n);

// Mask volume in mL: voxel count × voxel volume (mm³) / 1000.
double volume_ml(const uint8_t* mask, int64_t n, const std::array<double, 3>& spacing);

// ---------------------------------------------------------------- surface distance

// HD95 when exactly one of the masks is empty: the diagonal of the BraTS 240×240×155 1-mm volume,
// sqrt(240² + 240² + 155²) mm, the farthest two voxels of a BraTS grid can be.
constexpr double kHd95Empty = 373.12866;

// Boundary voxels: in the mask with at least one of the 6 face neighbours outside it. Voxels on
// the faces of the grid count as boundary: outside the grid is outside the mask, as in MedPy's
// hd95 (scipy binary_erosion with its default zero border).
std::vector<uint8_t> boundary_mask(const uint8_t* mask, const std::array<int64_t, 3>& dim);

// For every boundary voxel of `from` (in index order), the distance in mm to the nearest boundary
// voxel of `to`. Empty when `from` is empty; +inf each when only `to` is.
std::vector<double> boundary_distances(const uint8_t* from, const uint8_t* to,
                                       const std::array<int64_t, 3>& dim,
                                       const std::array<double, 3>& spacing);

// 95th-percentile Hausdorff distance in mm: the larger of the two directed 95th percentiles
// (linear interpolation, numpy's default) of boundary_distances(pred, ref) and (ref, pred).
// 0 when both masks are empty, kHd95Empty when exactly one is. Computed from an exact distance
// transform (distance.h) restricted to the bounding box of both masks, which holds every boundary
// voxel of both and so loses nothing.
double hd95(const uint8_t* pred, const uint8_t* ref, const std::array<int64_t, 3>& dim,
            const std::array<double, 3>& spacing);

// ---------------------------------------------------------------- per-case scoring

struct RegionMetrics {
  double dice = 0;            // e.g. 0.91
  double hd95 = 0;            // mm, e.g. 3.2
  double sensitivity = 0;     // NaN when the reference region is empty
  double specificity = 0;     // over the whole grid, e.g. 0.9995
  double volume_pred_ml = 0;  // e.g. 42.7
  double volume_ref_ml = 0;
};

// Every metric of one region from its two masks.
RegionMetrics score_region(const uint8_t* pred_mask, const uint8_t* ref_mask,
                           const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing);

struct CaseMetrics {
  std::array<RegionMetrics, kNumRegions> regions;  // indexed as kRegions: ET, WT, TC

  RegionMetrics& operator[](Region r) { return regions[static_cast<size_t>(r)]; }
  const RegionMetrics& operator[](Region r) const { return regions[static_cast<size_t>(r)]; }
  // All metrics flattened in the order of metric_columns().
  std::vector<double> values() const;
};

// Column names of CaseMetrics::values(), metric-major then ET, WT, TC:
// dice_et, dice_wt, dice_tc, hd95_*, sens_*, spec_*, vol_pred_*_ml, vol_ref_*_ml (18 columns).
std::vector<std::string> metric_columns();

// Scores a predicted label map against the reference, both in {0, 1, 2, 4} on the same grid.
CaseMetrics score_case(const uint8_t* pred_labels, const uint8_t* ref_labels,
                       const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing);
// The same on images; the grids must match (dims, and spacing within 1e-3 mm). Uses ref's spacing.
CaseMetrics score_case(const LabelMap& pred, const LabelMap& ref);

}  // namespace kdseg
