// kdseg reproduce [--config F] [--out DIR]: the paper's experiment on the embedded synthetic
// cohort, with the labelled-only control and paired statistics over seeds (docs/design.md §2).
#include <filesystem>
#include <iostream>
#include <memory>

#include "kdseg/cli.h"
#include "kdseg/cmd_train.h"
#include "kdseg/pipeline/reproduce.h"
#include "kdseg/util/progress.h"

namespace kdseg::cli {

CLI::App* add_reproduce_flags(CLI::App& app, ReproduceOptions& opt, RuntimeOptions& runtime,
                              DryRun* dry_run) {
  CLI::App* cmd = app.add_subcommand(
      "reproduce",
      "Run the paper's experiment end to end: synthetic cohort, three teachers, ensemble, "
      "pseudo-labels, distilled student, a labelled-only control and an oracle (the student on "
      "the true labels of every case), over several seeds; prints Table 1/2-style results with "
      "paired bootstrap intervals, says whether the run is data- or budget-limited, and writes "
      "a report");
  cmd->add_option("--out", opt.out, "Experiment folder (layout: docs/outputs.md)")
      ->capture_default_str();
  cmd->add_option("--preset", opt.preset,
                  "quick (a first look: 1 seed, 120 steps per model), cpu (the default: 3 "
                  "seeds), long (1000 steps per model: data-limited), paper (the paper's sizes "
                  "and schedules: a GPU), tiny (tests); --dry-run estimates the time on this "
                  "machine")
      ->capture_default_str();
  cmd->add_option("--seeds", opt.n_seeds,
                  "Seeds 1..N (initialisation and sampling of all models); 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--teachers", opt.teachers,
                  "The ensemble's members: recipe names with an optional :count, e.g. "
                  "student:3 or unet:2,cascade (unet, resunet, resunet-vae, cascade, student)")
      ->capture_default_str();
  cmd->add_option("--only-seed", opt.only_seed,
                  "Run only this seed's models (one seed per process or machine, same --out) and "
                  "stop before the tables; 0 = every seed")
      ->capture_default_str();
  cmd->add_option("--recipes", opt.student_recipes,
                  "Recipes beyond the paper's, each its own row, comma-separated: finetune (the "
                  "distilled student fine-tuned on the labelled cases: student-ft), mean-teacher "
                  "(the student's network with an online mean teacher on the unlabelled cases: "
                  "student-mt), or none; \"\" = the preset's (finetune; none for paper and "
                  "tiny)");
  cmd->add_option("--jobs", opt.jobs,
                  "Models trained at once, each in its own process; 0 = auto (on a CPU one "
                  "single-thread process per core, as memory allows), 1 = one after another")
      ->capture_default_str();
  cmd->add_option("--only-run", opt.only_run,
                  "With --only-seed: only this model of the seed (a teacher's name, student, "
                  "control or oracle) and its predictions; what each --jobs process runs");
  cmd->add_flag("!--no-oracle", opt.oracle,
                "Skip the oracle row (the student on the true labels of every case)");
  cmd->add_option("--cohort", opt.cohort, "Use this cohort folder (kdseg synth) instead");
  cmd->add_option("--labeled", opt.n_labeled, "Labelled cases; 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--unlabeled", opt.n_unlabeled, "Unlabelled cases; 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--test", opt.n_test, "Test cases; 0 = the preset's")->capture_default_str();
  cmd->add_option("--spacing", opt.spacing_mm, "Cohort spacing in mm (1-4); 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--cohort-seed", opt.cohort_seed, "Seed of the cohort")->capture_default_str();
  cmd->add_option("--teacher-steps", opt.teacher_steps, "Steps per teacher; 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--student-steps", opt.student_steps,
                  "Steps of the student, the control and the oracle; 0 = the preset's")
      ->capture_default_str();
  cmd->add_option("--pseudo-target", opt.pseudo_target, "hard (the paper) or soft; \"\" = preset");
  cmd->add_option("--pseudo-weight", opt.pseudo_weight,
                  "Share of samples from pseudo-labels (labelled: 1); 0 = by case counts")
      ->capture_default_str();
  cmd->add_option("--tta", opt.tta, "Test-time mirroring: none, xy, all; \"\" = the preset's");
  cmd->add_option_function<std::string>(
      "--models",
      [&opt](const std::string& text) {
        try {
          opt.models = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
          throw CLI::ValidationError("--models", std::string("not JSON: ") + e.what());
        }
      },
      "Recipe overrides as JSON, e.g. '{\"unet\":{\"steps\":500,\"lr\":0.001}}'");
  cmd->add_flag("!--no-report", opt.report, "Do not write the HTML report");
  cmd->add_flag("--lesion-wise", opt.lesion_wise,
                "Also score lesion-wise Dice and HD95 (as BraTS 2023+ ranks): lw_* columns in "
                "metrics.csv and results.json, a second table, and in the report");
  cmd->add_flag("--dry-run", dry_run->plan,
                "Print each model's steps, epochs, learning rates, patch and batch at once, then "
                "stop without training");
  cmd->add_flag("--time-steps", dry_run->time_steps,
                "With --dry-run: also time a few steps of each model on this device (at a "
                "patch of at most 64³ voxels, scaled up by the voxel ratio) and project the "
                "training time");
  cmd->add_flag("--quiet", opt.quiet, "No progress lines");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_reproduce_command(CLI::App& app) {
  auto opt = std::make_shared<ReproduceOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  auto dry_run = std::make_shared<DryRun>();
  CLI::App* cmd = add_reproduce_flags(app, *opt, *runtime, dry_run.get());
  cmd->callback([opt, runtime, cmd, dry_run] {
    opt->device = apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    // A parallel job is this command again, reading the options this run writes (--jobs).
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec)
      opt->job_command = {exe.string(), "reproduce", "--config",
                          (std::filesystem::path(opt->out) / "options.json").string()};
    if (dry_run->plan || dry_run->time_steps) {
      std::cout << plan_reproduce(*opt, false).text << std::flush;
      if (dry_run->time_steps) std::cout << "\n" << plan_reproduce(*opt, true).text;
      return;
    }
    std::filesystem::create_directories(opt->out);
    if (opt->only_run.empty())  // a parallel job reads its experiment's, and leaves it be
      write_resolved_config(cmd, (std::filesystem::path(opt->out) / "options.json").string());
    const ReproduceResult r = reproduce(*opt);
    std::cout << r.table << "\nreproduce: " << opt->out << " in " << format_seconds(r.seconds)
              << " (results.json, results.md, report/index.html)\n";
  });
}

}  // namespace kdseg::cli
