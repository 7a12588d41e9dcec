// kdseg synth --out DIR --labeled N --unlabeled M --test K: a synthetic BraTS-layout cohort grown
// on the Colin27 brain (docs/design.md §6; layout in src/kdseg/synth/cohort.h).
#include <filesystem>
#include <iostream>

#include "kdseg/cli.h"
#include "kdseg/synth/cohort.h"
#include "kdseg/util/error.h"
#include "kdseg/util/progress.h"

namespace kdseg::cli {

CLI::App* add_synth_flags(CLI::App& app, synth::SynthOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "synth",
      "Grow a synthetic cohort (BraTS 2018-2021 layout: labeled/, unlabeled/ with true "
      "labels in hidden/, test/, cohort.json) on the Colin27 brain; same seed, same bytes");
  cmd->add_option("--out", opt.out, "Cohort folder to write")->required();
  cmd->add_option("--labeled", opt.n_labeled, "Labelled training cases")->capture_default_str();
  cmd->add_option("--unlabeled", opt.n_unlabeled, "Unlabelled cases (labels kept in hidden/)")
      ->capture_default_str();
  cmd->add_option("--test", opt.n_test, "Labelled test cases")->capture_default_str();
  cmd->add_option("--spacing", opt.spacing_mm,
                  "Voxel size in mm: 1 = BraTS 240x240x155, "
                  "2 = 120x120x78, 3 = 80x80x52")
      ->capture_default_str()
      ->check(CLI::Range(1, 4));
  cmd->add_option("--seed", opt.seed, "Random seed")->capture_default_str();
  cmd->add_flag("!--no-stratify", opt.stratify_labeled,
                "Draw the labelled cases' tumour kinds by chance, like the other splits' (by "
                "default every kind, enhancing, non-enhancing and multifocal, appears among them)");
  cmd->add_option("--templates", opt.templates,
                  "Folder with ch2bet.nii.gz and ch2better.nii.gz "
                  "(Debian package mricron-data)")
      ->capture_default_str();
  cmd->add_option("--compression", opt.compression, "gzip level of the .nii.gz files (1-12)")
      ->capture_default_str()
      ->check(CLI::Range(1, 12));
  cmd->add_flag("--quiet", opt.quiet, "No per-case progress");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_synth_command(CLI::App& app) {
  auto opt = std::make_shared<synth::SynthOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_synth_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime, cmd] {
    apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    const synth::SynthReport report = synth::write_cohort(*opt);
    write_resolved_config(cmd, (std::filesystem::path(opt->out) / "config.json").string());
    std::cout << "synth: " << report.n_written << " case(s) in " << opt->out << " ("
              << format_seconds(report.seconds) << ")\n";
    report_failures("synth", report.failures,
                    "failed (listed above); the others are in " + opt->out);
  });
}

}  // namespace kdseg::cli
