#pragma once
// Reading the folders `kdseg report` shows (docs/outputs.md) into the page's data: an experiment
// (`kdseg reproduce --out EXP`), one training run (`kdseg train --out RUN`), or a folder of runs.
// Whatever is missing is noted, never fatal.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/report/report.h"
#include "kdseg/report/viewer.h"

namespace kdseg::report {

struct Collected {
  std::string kind;                // "experiment", "run" or "runs"
  nlohmann::json page;             // the page's data, all but "viewer"
  std::vector<ViewerCase> viewer;  // test cases with their predictions, sorted by ID
  int viewer_seed = -1;            // the seed whose predictions the viewer shows; -1 = none
  std::string viewer_cases_dir;    // where the viewer's cases came from; "" = none
  std::vector<std::string> notes;  // what is missing, in words for the page
};

// Reads `opt.run` (and opt.cases / opt.pred). Throws kdseg::Error when the folder does not exist
// or is none of the known kinds.
Collected collect(const ReportOptions& opt);

// One training run's log.csv as columns: {"step": [...], "loss": [...], "val_mean_dice": [...],
// ...} with null for empty cells. Logs longer than `max_rows` keep every k-th row and every row
// with a validation score.
nlohmann::json read_log_curve(const std::string& log_csv, size_t max_rows = 4000);

// The last component of a folder's path, e.g. "out/" -> "out" (names --pred folders and runs).
std::string folder_name(const std::string& dir);

// The methods in the order the paper's tables use (teachers, ensemble, student, control), then
// any others alphabetically.
std::vector<std::string> order_methods(std::vector<std::string> methods);

}  // namespace kdseg::report
