// kdseg: brain tumour segmentation by knowledge distillation. main only dispatches to the
// subcommands; each lives in apps/kdseg/cmd_<name>.cpp and its work in src/kdseg/.
#include "kdseg/cli.h"
#include "kdseg/cmd_models.h"
#include "kdseg/cmd_report.h"
#include "kdseg/util/crash.h"
#include "kdseg/util/memory.h"

#ifdef KDSEG_WITH_TORCH
#include "kdseg/cmd_train.h"
#include "kdseg/runtime/runtime.h"
#endif

int main(int argc, char** argv) {
  kdseg::install_crash_report();
  kdseg::keep_freed_memory();
  CLI::App app{
      "kdseg: segment brain tumours in multimodal MRI and distil an ensemble of 3D "
      "networks into one (BraTS 2019, \"Knowledge Distillation for Brain Tumor "
      "Segmentation\")",
      "kdseg"};
  app.require_subcommand(1);
  kdseg::cli::configure_root(app);
#ifdef KDSEG_WITH_TORCH
  app.set_version_flag("--version", [] { return kdseg::build_info(); });
#else
  app.set_version_flag("--version",
                       std::string("kdseg ") + KDSEG_VERSION + " (without LibTorch)\n");
#endif
  kdseg::cli::add_synth_command(app);
  kdseg::cli::add_montage_command(app);
  kdseg::cli::add_models_command(app);
  kdseg::cli::add_check_command(app);
  kdseg::cli::add_evaluate_command(app);
  kdseg::cli::add_report_command(app);
  kdseg::cli::add_export_command(app);
#ifdef KDSEG_WITH_TORCH
  kdseg::cli::add_train_command(app);
  kdseg::cli::add_predict_command(app);
  kdseg::cli::add_pseudo_label_command(app);
  kdseg::cli::add_reproduce_command(app);
#endif
  return kdseg::cli::run(app, argc, argv);
}
