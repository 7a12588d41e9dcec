#pragma once
// `kdseg reproduce` (docs/design.md §2, issue "the paper's experiment"): synthesise (or reuse) a
// cohort, train the teachers (the paper's three by default), ensemble them, pseudo-label the
// unlabelled cases, train the student on labelled + pseudo-labelled data, and two rows the paper
// lacks: the control (the same student on the labelled data alone) and the oracle (the same student
// on the true labels of the labelled and the unlabelled cases: the ceiling pseudo-labels could
// reach); evaluate every method on the test split, over several seeds, and compare them case by
// case (paired bootstrap, eval/paired.h). The oracle against the control says which regime the run
// is in: data-limited (more labels help, so distillation can show a gain) or budget-limited.
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

#include "kdseg/eval/paired.h"

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
  std::string preset = "cpu";     // quick (a first look, 1 seed), cpu (the default), long
                                  // (data-limited), paper (the paper's sizes and schedules: a
                                  // GPU), tiny (tests); --dry-run estimates the time here
  int n_seeds = 0;                // seeds 1..N vary initialisation and sampling of all models;
                                  // 0 = the preset's
  std::string teachers =
      "unet,resunet-vae,cascade";  // the ensemble's members: names of
                                   // recipes, each with an optional :count, e.g. "student:3"
  bool oracle = true;              // train the oracle row (needs the cohort's hidden/ labels)
  int only_seed = 0;               // run only this seed's models (e.g. one seed per machine or
                                   // process) and stop before the tables; 0 = every seed
  std::string cohort;              // an existing cohort folder; "" = synthesise into <out>/cohort
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
  bool lesion_wise = false;      // also score lesion-wise Dice and HD95 (BraTS 2023+,
                                 // eval/lesion.h): lw_* columns, a second table, the report's
  int threads = 0;               // 0 = all cores
  std::string device = "cpu";
  bool quiet = false;
  // Recipes beyond the paper's for making the unlabelled cases pay, each its own row
  // (docs/experiment.md "Recipes beyond the paper's"), comma-separated: "finetune" (the
  // distilled student fine-tuned on the labelled cases alone: row student-ft), "mean-teacher"
  // (the student's network trained with an online mean teacher on the unlabelled cases: row
  // student-mt); "none"; "" = the preset's (quick, cpu, long: finetune; paper, tiny: none).
  std::string student_recipes = "";
  // Models trained side by side, each in its own process (docs/experiment.md "Parallel jobs"):
  // 0 = auto (resolve_jobs), 1 = one after another in this process. Needs job_command.
  int jobs = 0;
  // With only_seed: only this model of the seed (a teacher's name, "student", "control" or
  // "oracle") and its predictions of the test split; "student" also pseudo-labels first. What
  // each parallel job runs; the others' outputs are left as they are.
  std::string only_run;
  // How a parallel job starts this experiment again, e.g. {"/usr/bin/kdseg", "reproduce",
  // "--config", "<out>/options.json"}; each job adds --only-seed, --only-run, --threads and
  // --jobs 1. Empty: no parallel jobs (a library caller's default).
  std::vector<std::string> job_command;
};

// How many processes train at once and with how many threads each: `opt.jobs` when given (> 0),
// else on a CPU one single-thread process per core (the small 3-D convolutions of the presets
// scale poorly with threads: on 2 cores two one-thread processes did 1.33x the work of one
// two-thread process), at most one per 2 GiB of available memory and at most `n_tasks`; 1 on a
// GPU or without opt.job_command. The cores are opt.threads (0 = every core).
struct JobPlan {
  int jobs = 1;
  int threads_per_job = 0;  // --threads of each job; 0 = every core (one job)
  std::string why;          // e.g. "auto: 2 cores, one single-thread process each"
};
JobPlan resolve_jobs(const ReproduceOptions& opt, int n_tasks);

// The preset's recipes by name: "unet", "resunet", "resunet-vae", "cascade" (teachers),
// "student" (the distilled student, the control and the oracle; a teacher too when --teachers
// names it), "student-ft" (the fine-tune of the distilled student: its network, a quarter of
// its steps at a tenth of its learning rate), "student-mt" (the mean teacher's: the student's
// recipe), after `opt` overrides (those of "student" reach both rows too). Throws for an unknown
// preset.
std::map<std::string, ModelRecipe> reproduce_recipes(const ReproduceOptions& opt);
// `opt` with the preset's values where it says 0 / "".
ReproduceOptions with_preset(ReproduceOptions opt);

// The rows --recipes adds, in table order: "finetune" gives "student-ft", "mean-teacher"
// "student-mt". "none" or "" gives
// none. Throws kdseg::Error (naming --recipes) for an unknown recipe or one named twice.
std::vector<std::string> recipe_methods(const std::string& recipes);

// One member of the teacher ensemble.
struct TeacherSpec {
  std::string name;  // its run folder and table row, e.g. "unet", "student-2"
  std::string arch;  // its recipe, e.g. "student"
  int instance = 0;  // k-th member of that recipe (0-based); its seed: teacher_seed
};
// The training seed of teacher `t` in experiment seed `s`: s + 1000 k for the k-th (0-based) member
// of a recipe, and s + 1000 (k + 1) for the student architecture's, whose member 0 would otherwise
// be the control itself (same recipe, seed and labelled data when the step counts agree).
uint64_t teacher_seed(int s, const TeacherSpec& t);
// "unet,resunet-vae,cascade" or "student:3" or "unet:2,cascade": a recipe with a repeat count;
// a recipe named more than once gets folders "<arch>-1", "<arch>-2", ... Throws kdseg::Error
// (naming --teachers) for an unknown recipe, a count below 1, or no teacher.
std::vector<TeacherSpec> parse_teachers(const std::string& text,
                                        const std::vector<std::string>& recipes);

// Where a run sits, from the oracle against the control (dice_mean): data-limited when the
// seed-and-case interval of (oracle - control) lies above 0 (true labels for the unlabelled cases
// help, so the question the experiment asks can be answered), else budget-limited. `share`: the
// part of that gain the distilled student captured, (student - control) / (oracle - control),
// given only when data-limited. When the interval is above 0 but the comparison's Holm-adjusted
// p (the table's verdict) is not below 0.05, the sentence says the margin is thin.
struct Regime {
  bool data_limited = false;
  RatioEstimate share;  // NaN when not data-limited
  std::string sentence;
};
Regime judge_regime(const PairedComparison& oracle_vs_control, const RatioEstimate& share);

// What a preset would train, without training (`reproduce --dry-run`): per model its steps,
// epochs (a pass over the run's cases), learning rate at the start, after the drop (step
// schedule) and at the end, patch, batch; instantly without `measure`. With `measure`
// (`--dry-run --time-steps`) also the seconds per step measured on random data on opt.device
// (time_train_steps) at probe_patch() and scaled by the voxel ratio, and the projected training
// time, so that timing the paper preset stays a matter of seconds and a few hundred MB.
struct ReproducePlan {
  nlohmann::json models;         // [{"model", "runs_per_seed", "steps", "epochs", ...}]
  double projected_seconds = 0;  // training of every model of every seed; 0 without measure
  std::string text;              // the table as printed
};
ReproducePlan plan_reproduce(const ReproduceOptions& opt, bool measure);
// The largest side of a timing probe's cube: a patch of more voxels is timed at probe_patch.
constexpr int64_t kProbeSide = 64;
// `patch` when it has at most kProbeSide³ voxels, else the patch scaled by one factor on every
// side to at most that many, each side a multiple of `stride` (at least one stride), e.g.
// 144x144x128 with stride 16 -> 64x64x48.
std::array<int64_t, 3> probe_patch(const std::array<int64_t, 3>& patch, int64_t stride);

struct ReproduceResult {
  nlohmann::json results;  // what results.json holds
  std::string table;       // the printed tables
  double seconds = 0;
};

ReproduceResult reproduce(const ReproduceOptions& opt);

}  // namespace kdseg
