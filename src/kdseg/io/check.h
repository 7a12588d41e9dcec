#pragma once
// `kdseg check`: everything that is wrong with a dataset folder, found in one pass before anyone
// spends hours training on it.
#include <string>
#include <vector>

#include "kdseg/io/dataset.h"

namespace kdseg {

struct CheckOptions {
  std::string dir;     // dataset folder or single case folder, e.g. data/BraTS2021_Training
  int threads = 0;     // cases checked in parallel; 0 = all cores
  bool quiet = false;  // no per-case progress on stderr
};

struct CaseCheck {
  std::string id;
  std::vector<std::string> info;  // one line per file: modality, shape, spacing, type, axes
  std::string labels;             // e.g. "labels 0:8921344 1:1020 2:15890 4:3210" or "unlabelled"
  std::vector<std::string> problems;  // each names the file and what is wrong
};

struct CheckReport {
  Dataset dataset;
  std::vector<CaseCheck> cases;
  std::vector<std::string> problems;  // every problem: discovery's and each case's
};

CheckReport check_dataset(const CheckOptions& opt);
// Human-readable listing of a report (what `kdseg check` prints).
std::string format_check_report(const CheckReport& report);

}  // namespace kdseg
