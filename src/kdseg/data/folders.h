#pragma once
// The training data of a run: `--data DIR[:W]` folders, labelled or pseudo-labelled, split by
// splits.json and preprocessed through the cache — everything the trainer needs before step 0,
// with every configuration error raised before any work (empty folder, unlabelled folder passed
// as labelled, patch larger than the volume, cache inside the data).
//
// A folder is pseudo-labelled when it holds a dataset.json with "kind": "pseudo" (docs/design.md
// §2). What is read from it (everything else is ignored):
//   {"kind": "pseudo", "target": "hard" | "soft",
//    "cases": {"<ID>": {"confidence": 0.93,                      (optional, default 1)
//                       "soft": "<ID>/<ID>_soft.nii.gz",          (optional, relative to DIR)
//                       "ignore": "<ID>/<ID>_ignore.nii.gz"}}}    (optional, relative to DIR)
// ("cases" may also be a list of such objects with an "id" key.) Soft targets are used only
// when "target" is "soft".
#include <string>
#include <vector>

#include "kdseg/data/cache.h"
#include "kdseg/data/sampler.h"
#include "kdseg/data/splits.h"

namespace kdseg {

struct DataFolderSpec {
  std::string dir;    // e.g. "cohort/labeled"
  double weight = 0;  // share of samples drawn from it (normalised over folders), e.g. 0.5;
                      // 0 = unset: when no folder sets one, each folder weighs its number of
                      // training cases (the cases are pooled, as the paper trains); when some
                      // do, an unset one weighs 1
};
// "DIR" or "DIR:W" (W a positive number). Throws kdseg::Error naming --data.
DataFolderSpec parse_data_arg(const std::string& arg);

struct DataFolder {
  std::string dir;
  double weight = 0;               // as DataFolderSpec
  bool pseudo = false;             // dataset.json says "kind": "pseudo"
  std::string target = "hard";     // pseudo folders: "hard" or "soft"
  std::vector<CaseInput> cases;    // sorted by ID
  std::vector<double> confidence;  // per case; 1 for labelled folders
};

// Discovers the folder's cases; reads dataset.json when it is a pseudo-labelled one. Throws
// when the folder is missing or empty, or (not pseudo) when any case has no label map.
DataFolder open_data_folder(const DataFolderSpec& spec);
// Pseudo folders: drops cases with confidence < min_confidence, then the least confident
// `drop_fraction` of the rest (ties broken by ID). Labelled folders are left alone.
void drop_least_confident(DataFolder& folder, double min_confidence, double drop_fraction);

struct TrainingDataOptions {
  std::vector<DataFolderSpec> data;   // --data DIR[:W], repeated
  std::string cache_dir;              // --cache DIR; "" = default_cache_dir()
  std::string splits_path;            // splits.json, made when absent, e.g. "runs/exp/splits.json"
  std::vector<std::string> test_ids;  // written to the split's "test" when it is made
  SplitOptions split;                 // seed and validation fraction of a new split
  double min_confidence = 0;          // --min-confidence, pseudo folders
  double drop_fraction = 0;           // share of least confident pseudo cases dropped, e.g. 0.1
  int threads = 1;                    // preprocessing threads (0 = all cores)
};

struct TrainingData {
  Splits splits;
  std::vector<DataFolder> folders;                            // as opened (after dropping)
  std::vector<SamplePool> pools;                              // one per folder: its train cases
  std::vector<std::shared_ptr<const CachedCase>> validation;  // labelled validation cases
  int n_built = 0;                                            // cache misses (files written)
};

// Opens the folders, makes or checks the split, checks the cache location, preprocesses (or
// finds cached) every train and validation case, and checks `patch` against each. Throws
// kdseg::Error on the first configuration problem.
TrainingData prepare_training_data(const TrainingDataOptions& opt, const PreprocessPlan& plan,
                                   const std::array<int64_t, 3>& patch);

// The cases of `dirs` as one pool of unlabelled patches (a mean teacher's, train/mean_teacher.h):
// every case of each folder (imagesTs/ too: nothing of them is read but the images), label maps
// ignored, preprocessed through the cache at `plan`, `patch` checked against each. Throws
// kdseg::Error naming the folder (missing, empty, a case ID in two folders, the cache inside it).
SamplePool prepare_unlabelled_pool(const std::vector<std::string>& dirs,
                                   const std::string& cache_dir, const PreprocessPlan& plan,
                                   const std::array<int64_t, 3>& patch, int threads,
                                   int* n_built = nullptr);

}  // namespace kdseg
