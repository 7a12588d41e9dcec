// kdseg models: list the architectures with their paper-size parameter counts.
#include "kdseg/cmd_models.h"

#include <iostream>
#include <memory>

#include "kdseg/cli.h"
#include "kdseg/util/error.h"
#ifdef KDSEG_WITH_TORCH
#include "kdseg/models/registry.h"
#endif

namespace kdseg::cli {

CLI::App* add_models_flags(CLI::App& app, ModelsOptions& opt) {
  CLI::App* cmd = app.add_subcommand(
      "models",
      "List the architectures (--model names), one line each: parameter count of the "
      "paper-size configuration, total stride (input sizes must be multiples), the "
      "paper's training patch, and that configuration");
  cmd->add_flag("--json", opt.json, "Print a JSON array instead of the table");
  return cmd;
}

void add_models_command(CLI::App& app) {
  auto opt = std::make_shared<ModelsOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_models_flags(app, *opt);
  add_common_flags(cmd, *runtime);
  cmd->callback([opt, runtime] {
    apply_runtime_flags(*runtime);
#ifdef KDSEG_WITH_TORCH
    const std::vector<ArchInfo> archs = list_architectures();
    if (opt->json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& a : archs)
        out.push_back({{"name", a.name},
                       {"description", a.description},
                       {"n_parameters", a.n_parameters},
                       {"stride", a.stride},
                       {"patch", a.patch},
                       {"config", a.config}});
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << format_architectures(archs);
    }
#else
    throw Error("models", "this kdseg was built without LibTorch (KDSEG_WITH_TORCH=OFF)",
                "rebuild with -DKDSEG_WITH_TORCH=ON");
#endif
  });
}

}  // namespace kdseg::cli
