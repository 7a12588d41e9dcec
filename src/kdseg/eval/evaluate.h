#pragma once
// `kdseg evaluate`: scores predicted label maps against references as the BraTS challenge does
// (metrics.h; lesion-wise as BraTS 2023+ ranks, lesion.h) and writes metrics.csv (a row per case)
// and summary.json (statistics per column).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/eval/lesion.h"

namespace kdseg {

struct EvaluateOptions {
  std::string pred;                  // predictions: <ID>.nii.gz files or case folders, e.g. out/
  std::string ref;                   // references in any layout, e.g. cohort/test
  std::string out;                   // folder for metrics.csv and summary.json, e.g. eval/
  std::string pred_labels = "auto";  // auto (= the references'), brats2021, brats2023,
                                     // brats2024, msd or nnunet
  std::string ref_labels = "auto";   // auto (from the layout), the same names
  std::string lesion_wise = "auto";  // lesion-wise Dice and HD95 too: on, off, or auto (on for
                                     // BraTS 2023/2024 references, the data whose challenges
                                     // rank by them; off for 2018-2021, MSD and nnU-Net)
  LesionOptions lesion;              // their dilation (voxels) and minimum lesion volume (mm³)
  int threads = 0;                   // cases scored in parallel; 0 = all cores
  bool quiet = false;                // no per-case progress
};

struct EvaluateReport {
  std::vector<std::string> columns;       // metric_columns() [+ lesion_metric_columns()]
  bool lesion_wise = false;               // the lesion-wise columns are there
  LesionOptions lesion;                   // as scored
  std::vector<std::string> ids;           // scored cases, sorted
  std::vector<std::vector<double>> rows;  // one per id, in column order
  std::vector<std::string> failures;      // every case not scored, with the reason
  nlohmann::json summary;                 // what summary.json holds
};

// Scores every case and writes out/metrics.csv and out/summary.json (atomically). A bad or
// missing case is reported in `failures` and skipped; the caller decides the exit code.
EvaluateReport evaluate(const EvaluateOptions& opt);
// The compact table `kdseg evaluate` prints: mean ± std and median per region for Dice and HD95
// (and, when scored, lesion-wise Dice and HD95 with the lesions found, missed and false).
std::string format_summary_table(const EvaluateReport& report);

}  // namespace kdseg
