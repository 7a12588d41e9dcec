// kdseg montage --case DIR_or_files --out case.png: look at a case without a viewer (axial and
// coronal slices of each modality and the labels over FLAIR).
#include <iostream>

#include "kdseg/cli.h"
#include "kdseg/synth/montage.h"

namespace kdseg::cli {

void add_montage_command(CLI::App& app) {
  auto opt = std::make_shared<MontageOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "montage",
      "Write a PNG of a case: axial and coronal slices through the tumour of each "
      "modality and the label overlay (NCR red, ED green, ET yellow)");
  cmd->add_option("--case", opt->inputs,
                  "A case folder (BraTS 2018-2021/2023, MSD, nnU-Net), or image "
                  "files in T1, T1ce, T2, FLAIR order")
      ->required();
  cmd->add_option("--seg", opt->seg, "Label map to overlay when --case lists files");
  cmd->add_option("--out", opt->out, "PNG file to write")->capture_default_str();
  cmd->add_option("--panel", opt->panel_px, "Panel width in pixels")
      ->capture_default_str()
      ->check(CLI::Range(32, 2048));
  add_common_flags(cmd, *runtime);
  cmd->callback([opt, runtime] {
    apply_runtime_flags(*runtime);
    std::cout << "montage: " << write_montage(*opt) << "\n";
  });
}

}  // namespace kdseg::cli
