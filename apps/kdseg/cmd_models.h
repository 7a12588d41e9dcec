#pragma once
// kdseg models: the architectures kdseg can train, one line each with the parameter count and
// configuration of its paper-size version.
#include <CLI/CLI.hpp>

namespace kdseg::cli {

struct ModelsOptions {
  bool json = false;  // print a JSON array instead of the table, e.g. for scripts
};

// Defines the flags once, bound to `opt` (the parser tests can use it alone).
CLI::App* add_models_flags(CLI::App& app, ModelsOptions& opt);
void add_models_command(CLI::App& app);

}  // namespace kdseg::cli
