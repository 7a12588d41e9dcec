#pragma once
// Lesion-wise Dice and HD95, the metrics the BraTS challenges rank by since 2023 (the definition
// of the challenge's public evaluation code for BraTS 2023, written anew here; docs/lesion_wise.md
// says where kdseg differs from that code and from the 2024 one):
//
//   1. Lesions of the reference: its 26-connected components, joined into one lesion where their
//      dilations (`dilation` iterations of the 18-neighbourhood cross, scipy's
//      generate_binary_structure(3, 2)) touch or overlap.
//   2. Components of the prediction: its 26-connected components, never joined.
//   3. A predicted component matches a lesion when it overlaps the lesion dilated as in 1; a
//      lesion's prediction is the union of the components that match it (one component may match
//      several lesions). Lesion Dice and HD95 compare the lesion with that union; a lesion that
//      nothing matches scores Dice 0 and HD95 kLesionHd95Missed.
//   4. Lesions of `min_volume_mm3` or less are left out of the score (still matched, so a
//      prediction of a small lesion is not a false positive). Every predicted component that
//      matches no lesion is a false positive and adds a term of Dice 0 and HD95 kLesionHd95Missed.
//   5. The case's score is the mean over the lesions kept and the false positives; with neither
//      (both masks empty, or only small lesions and no false positive) Dice 1 and HD95 0.
//
// Grids as in metrics.h: raw buffers, x fastest, index = (z * ny + y) * nx + x, dim = {nx, ny, nz},
// spacing in mm; a voxel is "in" where its byte is nonzero.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

// HD95 of a missed lesion and of a false positive in the challenge's code (mm): 374, one more than
// the 373.13 mm diagonal of the BraTS grid that whole-volume HD95 uses (metrics.h kHd95Empty).
constexpr double kLesionHd95Missed = 374.0;

struct LesionOptions {
  int dilation = 3;            // voxels: iterations of the 18-neighbourhood dilation that joins
                               // nearby reference components and matches predictions, e.g. 3
                               // (BraTS-GLI, -PED, -SSA), 1 (BraTS-MEN, -MET)
  double min_volume_mm3 = 50;  // reference lesions of this volume or less are left out, e.g. 50
                               // (BraTS 2023 GLI), 2 (BraTS-MET); 0 keeps every lesion
};

// 26-connected components of `mask`: label 1..n per voxel (0 outside the mask), numbered in index
// order of each component's first voxel. `n_components` receives n.
std::vector<int32_t> connected_components(const uint8_t* mask, const std::array<int64_t, 3>& dim,
                                          int32_t* n_components = nullptr);

// `mask` dilated `iterations` times by the 18-neighbourhood (the 3x3x3 cube without its 8
// corners), inside the grid (as scipy.ndimage.binary_dilation with its zero border).
std::vector<uint8_t> dilate18(const uint8_t* mask, const std::array<int64_t, 3>& dim,
                              int iterations);

// One lesion of the reference.
struct LesionMatch {
  int64_t n_voxels = 0;   // e.g. 1520
  double volume_mm3 = 0;  // n_voxels x voxel volume
  bool kept = true;       // volume_mm3 > min_volume_mm3: part of the score
  int n_matched = 0;      // predicted components that match it (0: missed)
  double dice = 0;        // against the union of the matched components
  double hd95 = 0;        // mm; kLesionHd95Missed when missed
};

struct LesionScores {
  double dice = 1;                   // mean over kept lesions and false positives, e.g. 0.84
  double hd95 = 0;                   // mm, the same mean, e.g. 12.3
  int n_tp = 0;                      // kept lesions that something matches
  int n_fn = 0;                      // kept lesions missed
  int n_fp = 0;                      // predicted components that match no lesion
  int n_small = 0;                   // lesions left out (volume <= min_volume_mm3)
  std::vector<LesionMatch> lesions;  // every lesion of the reference, kept or not, in index order
};

// Lesion-wise scores of one region's masks (see the top of this file). Throws kdseg::Error for a
// non-positive dim or spacing or a negative option.
LesionScores lesion_wise(const uint8_t* pred, const uint8_t* ref, const std::array<int64_t, 3>& dim,
                         const std::array<double, 3>& spacing, const LesionOptions& opt = {});

// Lesion-wise scores of ET, WT and TC (indexed as metrics.h kRegions) of two label maps in the
// internal convention {0, 1, 2, 4}.
struct CaseLesionMetrics {
  std::array<LesionScores, 3> regions;
  // Flattened in the order of lesion_metric_columns().
  std::vector<double> values() const;
};
CaseLesionMetrics score_case_lesion_wise(const uint8_t* pred_labels, const uint8_t* ref_labels,
                                         const std::array<int64_t, 3>& dim,
                                         const std::array<double, 3>& spacing,
                                         const LesionOptions& opt = {});
// lw_dice_et, lw_dice_wt, lw_dice_tc, lw_hd95_*, lw_tp_*, lw_fn_*, lw_fp_* (15 columns).
std::vector<std::string> lesion_metric_columns();

}  // namespace kdseg
