#include "kdseg/cli.h"

#include <cstdio>
#include <fstream>
#include <iostream>

#include "kdseg/io/gzip.h"
#ifdef KDSEG_WITH_TORCH
#include "kdseg/runtime/runtime.h"
#endif
#include "kdseg/util/error.h"

namespace kdseg::cli {

namespace {

// A flag's string value as typed JSON: numbers and booleans unquoted.
nlohmann::json typed(const std::string& s) {
  if (s == "true") return true;
  if (s == "false") return false;
  if (!s.empty()) {
    char* end = nullptr;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0') return i;
    double d = std::strtod(s.c_str(), &end);
    if (*end == '\0') return d;
  }
  return s;
}

std::string as_input(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump();
}

bool is_internal(const CLI::Option* opt) {
  const std::string n = opt->get_name();
  return n == "--help" || n == "--config" || n == "--help-all" || n == "--version" ||
         opt->get_lnames().empty();
}

}  // namespace

std::string JsonConfig::to_config(const CLI::App* app, bool, bool, std::string) const {
  return resolved_config(app).dump(2) + "\n";
}

std::vector<CLI::ConfigItem> JsonConfig::from_config(std::istream& input) const {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(input);
  } catch (const nlohmann::json::exception& e) {
    throw CLI::ConversionError(std::string("--config: not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw CLI::ConversionError("--config: the file must hold a JSON object");
  // A config.json that kdseg wrote ({"command", "kdseg_version", "options": {...}}) reads back.
  if (j.contains("options") && j["options"].is_object()) j = j["options"];
  std::vector<CLI::ConfigItem> items;
  std::vector<std::string> parents;
  for (const CLI::App* sub : root_->get_subcommands()) parents = {sub->get_name()};
  for (auto& [key, value] : j.items()) {
    if (value.is_null()) continue;  // "not set": the default stands
    CLI::ConfigItem item;
    item.parents = parents;
    item.name = key;
    if (value.is_object()) {  // an option that takes JSON text, e.g. "model-options"
      item.inputs.push_back(value.dump());
    } else if (value.is_array()) {
      for (auto& v : value) item.inputs.push_back(as_input(v));
    } else {
      item.inputs.push_back(as_input(value));
    }
    items.push_back(std::move(item));
  }
  return items;
}

void configure_root(CLI::App& app) {
  app.config_formatter(std::make_shared<JsonConfig>(&app));
  app.set_config("--config", "",
                 "JSON file of the command's options, {\"flag-name\": value}; "
                 "flags given on the command line override it");
  app.allow_config_extras(CLI::config_extras_mode::error);
}

void add_common_flags(CLI::App* cmd, RuntimeOptions& runtime) {
  // --config is the root's (CLI11 reads config files there); fallthrough lets it follow the
  // subcommand's name, and the footer documents it in the subcommand's --help.
  cmd->fallthrough();
  cmd->footer(
      "\n  --config FILE    JSON file of this command's options, e.g. {\"threads\": 2}:\n"
      "                   defaults < config file < command-line flags. Every run writes its\n"
      "                   resolved options as config.json beside its outputs.");
  cmd->add_option("--threads", runtime.threads, "Worker threads; 0 = all cores")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", runtime.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
}

std::string apply_runtime_flags(const RuntimeOptions& runtime) {
#ifdef KDSEG_WITH_TORCH
  return apply_runtime(runtime);
#else
  if (runtime.device != "cpu" && runtime.device != "auto")
    throw Error("--device " + runtime.device, "this kdseg was built without LibTorch: CPU only");
  return "cpu";
#endif
}

nlohmann::json resolved_config(const CLI::App* cmd) {
  nlohmann::json j = nlohmann::json::object();
  for (const CLI::Option* opt : cmd->get_options()) {
    if (is_internal(opt)) continue;
    const std::string key = opt->get_lnames().front();
    std::vector<std::string> values = opt->results();
    if (values.empty() && !opt->get_default_str().empty()) values = {opt->get_default_str()};
    const bool is_flag = opt->get_items_expected_max() == 0;
    const bool many = opt->get_items_expected_max() > 1;
    if (is_flag) {
      bool on = !values.empty() && values.front() != "false" && values.front() != "0";
      j[key] = on;
    } else if (many) {
      nlohmann::json arr = nlohmann::json::array();
      for (auto& v : values) arr.push_back(typed(v));
      j[key] = arr;
    } else {
      j[key] = values.empty() ? nlohmann::json(nullptr) : typed(values.back());
    }
  }
  return j;
}

void write_resolved_config(const CLI::App* cmd, const std::string& path,
                           const nlohmann::json& resolved) {
  nlohmann::json j;
  j["command"] = cmd->get_name();
  j["kdseg_version"] = KDSEG_VERSION;
  j["options"] = resolved_config(cmd);
  if (!resolved.is_null()) j["resolved"] = resolved;
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

void report_failures(const std::string& command, const std::vector<std::string>& failures,
                     const std::string& summary) {
  if (failures.empty()) return;
  for (const auto& f : failures) std::cerr << "  - " << f << "\n";
  throw Error(command, std::to_string(failures.size()) + " case(s) " + summary);
}

int run(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const kdseg::Error& e) {
    std::fflush(stdout);
    std::cerr << "kdseg: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "kdseg: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kdseg::cli
