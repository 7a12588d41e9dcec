#pragma once
// `kdseg reproduce` (DESIGN §2, issue "the paper's experiment"): synthesise (or reuse) a cohort,
// train the three teachers, ensemble them, pseudo-label the unlabelled cases, train the student
// on labelled + pseudo-labelled data and — the control the paper lacks — the same student on the
// labelled data alone; evaluate every method on the test split, over several seeds, and compare
// the student with the control and with the ensemble case by case (paired bootstrap).
//
// Layout of the output folder: docs/outputs.md ("The experiment"). Every stage is skipped when
// its output is there (a finished run's done.json, a prediction file, a pseudo-label's
// pseudo.json), so an interrupted reproduce resumes where it stopped.
#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdseg {

// How one model of the experiment is trained.
struct ModelRecipe {
  std::string arch;                                   // e.g. "unet"
  nlohmann::json options = nlohmann::json::object();  // architecture options
  std::array<int64_t, 3> patch{32, 32, 32};           // voxels
  std::array<int64_t, 3> fixed_shape{0, 0, 0};        // cascade: e.g. 64,64,64
  int64_t batch = 2;
  int64_t steps = 300;
  std::string optimizer = "adam";  // adam or sgd
  double lr = 3e-3;
  std::string schedule = "poly";  // see train/schedule.h
  bool bf16 = false;              // bf16 autocast in training (and its validation)
};

struct ReproduceOptions {
  std::string out = "reproduce";  // experiment folder
  std::string preset = "cpu";     // cpu (~20 min on 2 cores), paper (the paper's sizes, a GPU),
                                  // tiny (a few minutes: tests, a first look)
  int n_seeds = 3;                // seeds 1..N vary initialisation and sampling of all models
  std::string cohort;             // an existing cohort folder; "" = synthesise into <out>/cohort
  int n_labeled = 0, n_unlabeled = 0, n_test = 0;  // cohort sizes; 0 = the preset's
  int spacing_mm = 0;                              // cohort spacing; 0 = the preset's
  uint64_t cohort_seed = 2019;     // the cohort and the split stay fixed across seeds
  int64_t teacher_steps = 0;       // 0 = the preset's
  int64_t student_steps = 0;       // 0 = the preset's (student and control)
  std::string pseudo_target = "";  // hard (the paper) or soft; "" = the preset's
  double pseudo_weight = 0;        // share of samples from the pseudo-labelled folder (labelled:
                                   // 1); 0 = proportional to the case counts
  std::string tta = "";            // test-time mirroring of every prediction (none, xy, all);
                                   // "" = the preset's (cpu, tiny: none; paper: xy)
  nlohmann::json models =
      nlohmann::json::object();  // recipe overrides by name, e.g.
                                 // {"unet": {"steps": 500, "options": {"widths": [8,16,32,64]}}}
  bool report = true;            // write <out>/report at the end
  int threads = 0;               // 0 = all cores
  std::string device = "cpu";
  bool quiet = false;
};

// The preset's recipes by name: "unet", "resunet-vae", "cascade" (teachers), "student" (the
// distilled student and the control), after `opt` overrides. Throws for an unknown preset.
std::map<std::string, ModelRecipe> reproduce_recipes(const ReproduceOptions& opt);
// `opt` with the preset's values where it says 0 / "".
ReproduceOptions with_preset(ReproduceOptions opt);

// --- statistics (pure) ---
struct PairedComparison {
  std::string a, b, metric;      // e.g. "student", "control", "dice_mean"
  double diff = 0;               // mean over cases of (a - b), each case averaged over seeds
  std::array<double, 2> ci95{};  // bootstrap percentile interval of that mean
  int64_t n_cases = 0;
  std::string verdict;  // one line
};
// Paired bootstrap of the mean difference (a[i] - b[i]) over cases: `n_boot` resamples drawn
// with a generator seeded by `seed`; the 2.5th and 97.5th percentiles.
PairedComparison paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                  int n_boot = 10000, uint64_t seed = 2019);

struct ReproduceResult {
  nlohmann::json results;  // what results.json holds
  std::string table;       // the printed tables
  double seconds = 0;
};

ReproduceResult reproduce(const ReproduceOptions& opt);

}  // namespace kdseg
