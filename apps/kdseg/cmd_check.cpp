// kdseg check DIR: find the layout, list every case, list every problem.
#include <iostream>

#include "kdseg/cli.h"
#include "kdseg/util/error.h"

namespace kdseg::cli {

CLI::App* add_check_flags(CLI::App& app, CheckOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "check",
      "Find a dataset's layout, list every case (modalities, shape, spacing, labels) and "
      "every problem in one pass; exits non-zero when there is any");
  cmd->add_option("dir", opt.dir,
                  "Dataset folder (BraTS 2018-2021, BraTS 2023-2024, MSD Task01, nnU-Net raw) "
                  "or a single case folder")
      ->required();
  cmd->add_option("--labels", opt.labels,
                  "Label convention of the label maps: auto (from the layout or dataset.json), "
                  "brats2021, brats2023, brats2024 (BraTS 2023 values + 4 = resection cavity, "
                  "read as background), msd, nnunet")
      ->capture_default_str();
  cmd->add_flag("--quiet", opt.quiet, "No per-case progress");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_check_command(CLI::App& app) {
  auto opt = std::make_shared<CheckOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_check_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime] {
    apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    CheckReport report = check_dataset(*opt);
    std::cout << format_check_report(report);
    if (!report.problems.empty())
      throw Error(opt->dir,
                  std::to_string(report.problems.size()) + " problem(s) found (listed above)");
  });
}

}  // namespace kdseg::cli
