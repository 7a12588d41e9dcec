#pragma once
// kdseg train, kdseg predict, kdseg pseudo-label: the LibTorch commands of the method.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "kdseg/distill/pseudo_label.h"
#include "kdseg/infer/predict.h"
#include "kdseg/pipeline/reproduce.h"
#include "kdseg/train/trainer.h"
#include "kdseg/util/runtime_options.h"

namespace kdseg::cli {

// Flag sets shared by the commands (each defined once).
// `precision` receives --precision (default auto; --bf16 sets bf16): apply_precision resolves it.
void add_inference_flags(CLI::App* cmd, PredictOptions& opt, std::string& precision);
// Resolves `precision` on opt.inference.device into opt.inference.bf16, prints the choice (unless
// quiet) and returns it as JSON for config.json's "resolved".
nlohmann::json apply_precision(const std::string& command, const std::string& precision,
                               PredictOptions& opt);

CLI::App* add_train_flags(CLI::App& app, TrainOptions& opt, RuntimeOptions& runtime);
void add_train_command(CLI::App& app);
CLI::App* add_predict_flags(CLI::App& app, PredictOptions& opt, std::string& precision,
                            RuntimeOptions& runtime);
void add_predict_command(CLI::App& app);
CLI::App* add_pseudo_label_flags(CLI::App& app, PseudoLabelOptions& opt, std::string& shard,
                                 std::string& precision, RuntimeOptions& runtime);
void add_pseudo_label_command(CLI::App& app);
// reproduce --dry-run [--time-steps]: print the plan (at once), and time it when asked.
struct DryRun {
  bool plan = false;        // --dry-run
  bool time_steps = false;  // --time-steps
};
CLI::App* add_reproduce_flags(CLI::App& app, ReproduceOptions& opt, RuntimeOptions& runtime,
                              DryRun* dry_run);
void add_reproduce_command(CLI::App& app);

}  // namespace kdseg::cli
