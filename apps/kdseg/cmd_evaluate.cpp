// kdseg evaluate --pred DIR --ref DIR --out DIR: BraTS metrics per case and their summary.
#include <filesystem>
#include <iostream>

#include "kdseg/cli.h"
#include "kdseg/util/error.h"

namespace kdseg::cli {

CLI::App* add_evaluate_flags(CLI::App& app, EvaluateOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "evaluate",
      "Score predicted label maps against references as the BraTS challenge does "
      "(Dice, HD95, sensitivity, specificity, volumes for ET, WT, TC; lesion-wise Dice and "
      "HD95 as BraTS 2023+ ranks); writes metrics.csv, summary.json and config.json");
  cmd->add_option("--pred", opt.pred, "Predictions: <ID>.nii.gz files or case folders")->required();
  cmd->add_option("--ref", opt.ref,
                  "References: BraTS 2018-2021/2023/2024 case folders, an MSD or nnU-Net "
                  "dataset (or its labelsTr/), or <ID>.nii.gz label maps")
      ->required();
  cmd->add_option("--out", opt.out, "Folder for metrics.csv, summary.json, config.json")
      ->required();
  cmd->add_option("--pred-labels", opt.pred_labels,
                  "Label convention of the predictions: auto (= the references'), brats2021, "
                  "brats2023, brats2024, msd, nnunet")
      ->capture_default_str();
  cmd->add_option("--ref-labels", opt.ref_labels,
                  "Label convention of the references: auto (from the layout or dataset.json), "
                  "brats2021, brats2023, brats2024 (4 = resection cavity: not tumour), msd, "
                  "nnunet")
      ->capture_default_str();
  cmd->add_option("--lesion-wise", opt.lesion_wise,
                  "Lesion-wise Dice and HD95 as BraTS 2023+ ranks (lw_* columns): on, off, or "
                  "auto = on for BraTS 2023/2024 references")
      ->capture_default_str();
  cmd->add_option("--lesion-dilation", opt.lesion.dilation,
                  "Lesion-wise: voxels of 18-neighbourhood dilation joining nearby reference "
                  "components and matching predictions (BraTS-GLI 3, -MEN/-MET 1)")
      ->capture_default_str();
  cmd->add_option("--lesion-min-volume", opt.lesion.min_volume_mm3,
                  "Lesion-wise: reference lesions of this volume (mm³) or less are left out "
                  "(BraTS 2023 GLI 50)")
      ->capture_default_str();
  cmd->add_flag("--quiet", opt.quiet, "No per-case progress");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_evaluate_command(CLI::App& app) {
  auto opt = std::make_shared<EvaluateOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_evaluate_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime, cmd] {
    apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    EvaluateReport report = evaluate(*opt);
    write_resolved_config(cmd, (std::filesystem::path(opt->out) / "config.json").string());
    std::cout << format_summary_table(report);
    report_failures(
        "evaluate", report.failures,
        "could not be scored (listed above); the others are in " + opt->out + "/metrics.csv");
  });
}

}  // namespace kdseg::cli
