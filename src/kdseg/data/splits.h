#pragma once
// splits.json (docs/design.md §2 "Splits"): which case IDs an experiment trains on, validates on
// and tests on. Every method and seed of an experiment uses the same file. LibTorch-free.
//
//   {"format": "kdseg-splits", "version": 1, "seed": 2019, "validation_fraction": 0.2,
//    "train": ["SYN_L0002", ...], "validation": ["SYN_L0001", ...], "test": ["SYN_T0001", ...]}
//
// Made when absent: the labelled IDs sorted, shuffled with a generator seeded by `seed` (the
// same on every platform), the first round(n * fraction) validated (at least 1 when n >= 2 and
// fraction > 0), the rest trained on. Pseudo-labelled cases always go to train, never to
// validation. Reused when present: then
//   - a pseudo-labelled ID listed under validation is an error;
//   - a labelled ID of the data that the file does not list is an error (the experiment's
//     split would silently change); a pseudo-labelled one is added to train (a student run may
//     add pseudo-labelled data to the teachers' split);
//   - a train or validation ID the data lacks is an error.
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

constexpr int64_t kSplitsVersion = 1;

struct Splits {
  uint64_t seed = 2019;              // e.g. 7
  double validation_fraction = 0.2;  // share of labelled cases validated on, e.g. 0.25
  std::vector<std::string> train;    // case IDs
  std::vector<std::string> validation;
  std::vector<std::string> test;
};

struct SplitOptions {
  uint64_t seed = 2019;              // shuffles the labelled IDs, e.g. 7
  double validation_fraction = 0.2;  // in [0, 1), e.g. 0.25
};

// The deterministic split of `labelled` IDs (+ `pseudo` IDs to train, + `test` IDs as given).
Splits make_splits(std::vector<std::string> labelled, const std::vector<std::string>& pseudo,
                   const std::vector<std::string>& test, const SplitOptions& opt);

// Reads and validates a splits.json (format, version, no ID twice). Throws kdseg::Error.
Splits read_splits(const std::string& path);
// Writes atomically.
void write_splits(const std::string& path, const Splits& s);

// The file at `path` checked against the data (rules above), or a new split written there.
Splits load_or_make_splits(const std::string& path, const std::vector<std::string>& labelled,
                           const std::vector<std::string>& pseudo,
                           const std::vector<std::string>& test, const SplitOptions& opt,
                           bool* made = nullptr);

}  // namespace kdseg
