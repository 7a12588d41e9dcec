#pragma once
// kdseg report --run DIR --out REPORT_DIR: one offline HTML report of an experiment or a training
// run (results table, box plots, training curves, slice viewer, configuration and timing).
#include <CLI/CLI.hpp>

#include "kdseg/report/report.h"
#include "kdseg/util/runtime_options.h"

namespace kdseg::cli {

// Defines the flags once, bound to `opt` (the parser tests can use it alone).
CLI::App* add_report_flags(CLI::App& app, ReportOptions& opt, RuntimeOptions& runtime);
void add_report_command(CLI::App& app);

}  // namespace kdseg::cli
