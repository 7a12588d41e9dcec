// kdseg reproduce [--config F] [--out DIR]: the paper's experiment on the embedded synthetic
// cohort, with the labelled-only control and paired statistics over seeds (DESIGN §2).
#include <filesystem>
#include <iostream>
#include <memory>

#include "kdseg/cli.h"
#include "kdseg/cmd_train.h"
#include "kdseg/pipeline/reproduce.h"
#include "kdseg/util/progress.h"

namespace kdseg::cli {

CLI::App* add_reproduce_flags(CLI::App& app, ReproduceOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "reproduce",
      "Run the paper's experiment end to end: synthetic cohort, three teachers, ensemble, "
      "pseudo-labels, distilled student and a labelled-only control, over several seeds; "
      "prints Table 1/2-style results with paired bootstrap intervals and writes a report");
  cmd->add_option("--out", opt.out, "Experiment folder (layout: docs/outputs.md)")
      ->capture_default_str();
  cmd->add_option("--preset", opt.preset,
                  "cpu (~20 min on 2 cores), tiny (minutes), paper (the paper's sizes; a GPU)")
      ->capture_default_str();
  cmd->add_option("--seeds", opt.n_seeds, "Seeds 1..N (initialisation and sampling of all models)")
      ->capture_default_str();
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
                  "Steps of the student and the control; 0 = the preset's")
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
  cmd->add_flag("--quiet", opt.quiet, "No progress lines");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_reproduce_command(CLI::App& app) {
  auto opt = std::make_shared<ReproduceOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_reproduce_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime, cmd] {
    opt->device = apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    std::filesystem::create_directories(opt->out);
    write_resolved_config(cmd, (std::filesystem::path(opt->out) / "options.json").string());
    const ReproduceResult r = reproduce(*opt);
    std::cout << r.table << "\nreproduce: " << opt->out << " in " << format_seconds(r.seconds)
              << " (results.json, results.md, report/index.html)\n";
  });
}

}  // namespace kdseg::cli
