// kdseg report --run DIR --out REPORT_DIR: the work is in src/kdseg/report/; this only wires it.
#include "kdseg/cmd_report.h"

#include <filesystem>
#include <iostream>
#include <memory>

#include "kdseg/cli.h"

namespace kdseg::cli {

CLI::App* add_report_flags(CLI::App& app, ReportOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Write one HTML report (index.html + assets, works offline and from a web server) of an "
      "experiment (kdseg reproduce --out) or a training run (kdseg train --out): results table, "
      "box plots of per-case Dice, training curves, a slice viewer of the test cases, "
      "configuration and timing");
  cmd->add_option("--run", opt.run, "Experiment or training-run folder (docs/outputs.md)")
      ->required();
  cmd->add_option("--out", opt.out, "Report folder; empty = <run>/report")->capture_default_str();
  cmd->add_option("--cases", opt.cases,
                  "Test cases for the viewer (any layout); empty = <run>/cohort/test")
      ->capture_default_str();
  cmd->add_option("--pred", opt.pred,
                  "More prediction folders to show in the viewer (named after the folder)");
  cmd->add_option("--niivue", opt.niivue,
                  "NiiVue bundle (niivue.umd.js); empty = $KDSEG_NIIVUE, then "
                  "<exe>/../share/kdseg/niivue/, then third_party/niivue/ of the sources "
                  "(scripts/web_deps.sh); none = static PNG slices only")
      ->capture_default_str();
  cmd->add_option("--web", opt.web,
                  "Folder of the page template (web/report); empty = $KDSEG_WEB_DIR, then "
                  "<exe>/../share/kdseg/web/report, then the sources")
      ->capture_default_str();
  cmd->add_option("--max-viewer-cases", opt.max_viewer_cases,
                  "Test cases in the viewer (the first by ID); 0 = none")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--panel", opt.panel_px, "Size of one static slice in pixels")
      ->capture_default_str()
      ->check(CLI::Range(32, 1024));
  cmd->add_flag("--lesion-wise", opt.lesion_wise,
                "Results table with the lesion-wise Dice and HD95 too (the lw_* columns that "
                "kdseg evaluate writes for BraTS 2023/2024 data or with --lesion-wise on)");
  cmd->add_flag("--quiet", opt.quiet, "No per-case progress");
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_report_command(CLI::App& app) {
  auto opt = std::make_shared<ReportOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_report_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime, cmd] {
    apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    const ReportSummary s = write_report(*opt);
    const std::filesystem::path out = std::filesystem::path(s.index_html).parent_path();
    write_resolved_config(cmd, (out / "config.json").string());
    for (const auto& n : s.notes) std::cout << "  note: " << n << "\n";
    std::cout << "report: " << s.index_html << " (" << s.kind << "; " << s.n_methods << " methods, "
              << s.n_curves << " training curves, " << s.n_viewer_cases << " cases in the viewer, "
              << (s.niivue ? "NiiVue" : "static slices only") << ")\n"
              << "open it in a browser (file://" << std::filesystem::absolute(s.index_html).string()
              << "), or serve the folder: python3 -m http.server -d " << out.string() << "\n";
  });
}

}  // namespace kdseg::cli
