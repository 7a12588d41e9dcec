#pragma once
// What every kdseg subcommand shares: flags defined once and bound to the stage's options struct,
// `--config FILE` (JSON; defaults < config file < command line), --threads/--device, and the
// resolved configuration written beside the outputs.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/eval/evaluate.h"
#include "kdseg/io/check.h"
#include "kdseg/synth/cohort.h"
#include "kdseg/util/runtime_options.h"

namespace kdseg::cli {

// Reads `--config FILE` as a JSON object whose keys are the command's long flag names without
// dashes, e.g. {"pred": "out/", "threads": 2, "regions": ["et", "wt"]}. Writes the same shape.
// The keys apply to the subcommand being run (`kdseg evaluate --config f.json`).
class JsonConfig : public CLI::Config {
 public:
  explicit JsonConfig(const CLI::App* root) : root_(root) {}
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  const CLI::App* root_;
};

// Sets up the root app: --config (read by JsonConfig for whichever subcommand runs).
void configure_root(CLI::App& app);
// Adds --threads and --device to a subcommand, and lets it take --config.
void add_common_flags(CLI::App* cmd, RuntimeOptions& runtime);

// Applies --threads and --device for the process (LibTorch's intra-op threads, which default to
// 1 on Debian's build; the device is checked to exist). Every command calls it first. Returns
// the device in force ("auto" resolved), e.g. "cpu" or "cuda".
std::string apply_runtime_flags(const RuntimeOptions& runtime);

// The command's every flag with the value in force (given, from --config, or the default).
nlohmann::json resolved_config(const CLI::App* cmd);
// Writes resolved_config(cmd) to `path` atomically, as pretty JSON.
void write_resolved_config(const CLI::App* cmd, const std::string& path,
                           const nlohmann::json& resolved = nlohmann::json());

// Lists a batch command's failures on stderr and throws the one error that makes the exit code
// non-zero: "<N> case(s) <summary>" (docs/design.md §2 "Batches of cases").
void report_failures(const std::string& command, const std::vector<std::string>& failures,
                     const std::string& summary);

// Parses and runs; maps errors to exit codes: 0 ok, 1 kdseg::Error (message on stderr),
// CLI11's own codes for usage errors.
int run(CLI::App& app, int argc, char** argv);

// The subcommands (one cmd_<name>.cpp each). add_<name>_flags defines the command's flags once,
// bound to its options struct (the parser tests use it alone); add_<name>_command adds the action.
CLI::App* add_check_flags(CLI::App& app, CheckOptions& opt, RuntimeOptions& runtime);
void add_check_command(CLI::App& app);
CLI::App* add_evaluate_flags(CLI::App& app, EvaluateOptions& opt, RuntimeOptions& runtime);
void add_evaluate_command(CLI::App& app);
CLI::App* add_synth_flags(CLI::App& app, synth::SynthOptions& opt, RuntimeOptions& runtime);
void add_synth_command(CLI::App& app);
void add_montage_command(CLI::App& app);
void add_export_command(CLI::App& app);

}  // namespace kdseg::cli
