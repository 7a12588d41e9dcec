#pragma once
// `kdseg check`: everything that is wrong with a dataset folder, found in one pass before anyone
// spends hours training on it.
#include <string>
#include <vector>

#include "kdseg/io/dataset.h"

namespace kdseg {

struct CheckOptions {
  std::string dir;  // dataset folder or single case folder, e.g. data/BraTS2021_Training
  std::string labels = "auto";  // label convention of the label maps: auto (the layout's or
                                // dataset.json's), brats2021, brats2023, brats2024, msd, nnunet
  int threads = 0;              // cases checked in parallel; 0 = all cores
  bool quiet = false;           // no per-case progress on stderr
};

struct CaseCheck {
  std::string id;
  std::vector<std::string> info;   // one line per file: modality, shape, spacing, type, axes
  std::string labels;              // e.g. "labels 0:8921344 1:1020 2:15890 4:3210" or "unlabelled"
  int64_t n_resection_cavity = 0;  // voxels of BraTS 2024's RC (read as background)
  int64_t n_enhancing = 0;         // voxels of ET (internal label 4)
  std::vector<std::string> problems;  // each names the file and what is wrong
};

struct CheckReport {
  Dataset dataset;  // dataset.labels: the convention the label maps were read with
  std::vector<CaseCheck> cases;
  int n_resection_cavity_cases = 0;   // labelled cases holding RC
  std::vector<std::string> problems;  // every problem: discovery's and each case's
};

CheckReport check_dataset(const CheckOptions& opt);
// Human-readable listing of a report (what `kdseg check` prints).
std::string format_check_report(const CheckReport& report);

}  // namespace kdseg
