#include "kdseg/report/collect.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "kdseg/io/dataset.h"
#include "kdseg/report/tables.h"
#include "kdseg/util/error.h"

namespace kdseg::report {

namespace fs = std::filesystem;

namespace {

const char* const kRegions[3] = {"et", "wt", "tc"};

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}
bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// Sub-folders of `dir`, sorted by name; none when `dir` is not a folder.
std::vector<fs::path> sub_dirs(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!is_dir(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// A JSON file, or nothing (with a note) when it is missing or malformed.
std::optional<nlohmann::json> read_json(const fs::path& path, std::vector<std::string>& notes,
                                        bool note_missing) {
  if (!is_file(path)) {
    if (note_missing) notes.push_back(path.string() + " not found");
    return std::nullopt;
  }
  std::ifstream in(path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    notes.push_back(path.string() + " is not valid JSON (" + e.what() + "); left out");
    return std::nullopt;
  }
}

// "seed7" -> 7; -1 for other names.
int seed_of(const std::string& name) {
  if (name.size() < 5 || name.compare(0, 4, "seed") != 0) return -1;
  for (size_t i = 4; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoi(name.substr(4));
}

std::vector<int> seed_folders(const fs::path& dir) {
  std::vector<int> seeds;
  for (const auto& d : sub_dirs(dir)) {
    const int s = seed_of(d.filename().string());
    if (s >= 0) seeds.push_back(s);
  }
  std::sort(seeds.begin(), seeds.end());
  return seeds;
}

}  // namespace

std::string folder_name(const std::string& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "out/" -> "out"
  return p.filename().string();
}

namespace {

fs::path seed_dir(const fs::path& root, int seed) {
  return root / ("seed" + std::to_string(seed));
}

// Everything a run folder says about itself: name, its config and done.json.
nlohmann::json run_entry(const fs::path& dir, const std::string& name, const std::string& model,
                         int seed, std::vector<std::string>& notes) {
  nlohmann::json r;
  r["name"] = name;
  r["model"] = model;
  r["seed"] = seed >= 0 ? nlohmann::json(seed) : nlohmann::json();
  r["dir"] = dir.string();
  if (auto c = read_json(dir / "config.json", notes, false)) r["config"] = *c;
  if (auto d = read_json(dir / "done.json", notes, false)) r["done"] = *d;
  if (is_file(dir / "log.csv")) {
    try {
      r["log"] = read_log_curve((dir / "log.csv").string());
    } catch (const std::exception& e) {
      notes.push_back(std::string("training log left out: ") + e.what());
    }
  }
  return r;
}

// The page's "table" from results.json's {"method": {"dice_et": {"mean", "std"}}} (no per-case
// values to take a median from).
nlohmann::json table_from_results(const nlohmann::json& results,
                                  const std::vector<std::string>& methods, bool lesion_wise) {
  nlohmann::json table;
  table["columns"] = table_columns(lesion_wise);
  table["rows"] = nlohmann::json::array();
  const nlohmann::json& t = results["table"];
  for (const auto& m : methods) {
    if (!t.contains(m) || !t[m].is_object()) continue;
    nlohmann::json row = {{"method", m}, {"aux", false}, {"cells", nlohmann::json::object()}};
    for (const auto& c : table_columns(lesion_wise)) {
      if (!t[m].contains(c) || !t[m][c].is_object()) continue;
      const auto& cell = t[m][c];
      row["cells"][c] = {{"mean", cell.value("mean", nlohmann::json())},
                         {"std", cell.value("std", nlohmann::json())}};
    }
    table["rows"].push_back(row);
  }
  mark_best(table);
  return table;
}

// Per-case metrics of every method and seed: the results table (with the lesion-wise columns
// when asked), the box plots, and the Dice of each case for the viewer.
void collect_metrics(const fs::path& root, const std::vector<int>& seeds,
                     const std::vector<std::string>& methods, const nlohmann::json* results,
                     bool lesion_wise, Collected& c) {
  std::map<std::string, std::map<std::string, std::vector<double>>> values;
  nlohmann::json per_case = nlohmann::json::object();  // seed -> method -> id -> {et, wt, tc}
  std::vector<std::string> found;
  bool have_pseudo = false;
  std::vector<std::string> eval_methods = methods;
  eval_methods.push_back("pseudo");
  for (int s : seeds)
    for (const auto& m : eval_methods) {
      const fs::path csv = seed_dir(root, s) / "eval" / m / "metrics.csv";
      if (!is_file(csv)) continue;
      CsvTable t;
      try {
        t = read_csv(csv.string());
      } catch (const std::exception& e) {
        c.notes.push_back(e.what());
        continue;
      }
      const std::string key = m == "pseudo" ? "pseudo-labels" : m;
      if (m == "pseudo") have_pseudo = true;
      if (std::find(found.begin(), found.end(), key) == found.end()) found.push_back(key);
      for (const auto& col : t.header) {
        if (col == "id") continue;
        auto v = t.numbers(col);
        auto& dst = values[key][col];
        dst.insert(dst.end(), v.begin(), v.end());
      }
      const int id_col = t.column("id");
      if (id_col < 0 || m == "pseudo") continue;
      for (const auto& row : t.rows) {
        nlohmann::json d;
        for (const char* r : kRegions) {
          const int col = t.column(std::string("dice_") + r);
          const double v = col < 0 ? NAN : parse_number(row[static_cast<size_t>(col)]);
          d[r] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
        }
        per_case[std::to_string(s)][m][row[static_cast<size_t>(id_col)]] = d;
      }
    }
  c.page["case_dice"] = per_case;
  if (!found.empty()) {
    std::vector<std::string> order = methods;
    if (have_pseudo) order.push_back("pseudo-labels");
    c.page["table"] = results_table(order, values, {"pseudo-labels"}, table_columns(lesion_wise));
    bool any_lesion_wise = false;
    for (const auto& [m, cols] : values) any_lesion_wise |= cols.count("lw_dice_wt") > 0;
    if (lesion_wise && !any_lesion_wise)
      c.notes.push_back(
          "--lesion-wise: no lw_* columns in seed*/eval/*/metrics.csv (kdseg evaluate "
          "--lesion-wise on writes them; kdseg reproduce --lesion-wise too)");
    std::string basis =
        seeds.size() > 1 ? "per test case, pooled over seeds " : "per test case, seed ";
    for (size_t i = 0; i < seeds.size(); ++i) basis += (i ? ", " : "") + std::to_string(seeds[i]);
    c.page["table"]["basis"] = basis;
    nlohmann::json boxes = {{"regions", {"et", "wt", "tc"}}, {"methods", nlohmann::json::array()}};
    for (const auto& m : methods) {
      if (!values.count(m)) continue;
      boxes["methods"].push_back(m);
      for (const char* r : kRegions)
        boxes["data"][r][m] = to_json(box_stats(values[m][std::string("dice_") + r]));
    }
    c.page["boxes"] = boxes;
  } else if (results && results->contains("table") && (*results)["table"].is_object()) {
    c.page["table"] = table_from_results(*results, methods, lesion_wise);
    c.page["table"]["basis"] = "mean ± std over seeds, from results.json (no metrics.csv found)";
    c.notes.push_back("no per-case metrics (seed*/eval/*/metrics.csv): no box plots");
  } else {
    c.notes.push_back("no metrics (seed*/eval/*/metrics.csv or results.json): no results table");
  }
}

// Prediction folders of `seed` (method -> folder), in method order.
std::vector<std::pair<std::string, fs::path>> pred_folders(const fs::path& seed_root) {
  std::vector<std::pair<std::string, fs::path>> out;
  std::vector<std::string> names;
  for (const auto& d : sub_dirs(seed_root / "pred")) names.push_back(d.filename().string());
  for (const auto& m : order_methods(names)) out.emplace_back(m, seed_root / "pred" / m);
  return out;
}

// The viewer's cases: `cases_dir`'s cases, each with its prediction in every folder of `preds`.
void collect_viewer(const fs::path& cases_dir,
                    const std::vector<std::pair<std::string, fs::path>>& preds, Collected& c) {
  Dataset ds;
  try {
    ds = discover_dataset(cases_dir.string());
  } catch (const std::exception& e) {
    c.notes.push_back(std::string("no slice viewer: ") + e.what());
    return;
  }
  c.viewer_cases_dir = cases_dir.string();
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> by_id;
  for (const auto& [method, dir] : preds) {
    std::vector<std::pair<std::string, std::string>> maps;
    try {
      maps = discover_label_maps(dir.string());
    } catch (const std::exception& e) {
      c.notes.push_back("predictions of " + method + " left out: " + e.what());
      continue;
    }
    for (const auto& [id, path] : maps) by_id[id].emplace_back(method, path);
  }
  for (const auto& files : ds.cases) {
    ViewerCase vc;
    vc.files = files;
    vc.labels = ds.labels;
    auto it = by_id.find(files.id);
    if (it != by_id.end()) vc.preds = it->second;
    if (vc.preds.empty() && files.seg.empty()) continue;  // nothing to overlay
    c.viewer.push_back(std::move(vc));
  }
  if (by_id.empty())
    c.notes.push_back("no predictions found for the test cases in " + cases_dir.string() +
                      ": the viewer shows the reference labels only");
}

void collect_experiment(const fs::path& root, const ReportOptions& opt, Collected& c) {
  c.kind = "experiment";
  std::optional<nlohmann::json> results = read_json(root / "results.json", c.notes, true);
  if (auto cfg = read_json(root / "config.json", c.notes, true)) c.page["config"] = *cfg;

  std::vector<int> seeds = seed_folders(root);
  if (results && (*results)["seeds"].is_array() && !(*results)["seeds"].empty()) {
    seeds.clear();
    for (const auto& s : (*results)["seeds"])
      if (s.is_number_integer()) seeds.push_back(s.get<int>());
  }
  c.page["seeds"] = seeds;

  std::vector<std::string> methods;
  if (results && (*results)["methods"].is_array()) {
    for (const auto& m : (*results)["methods"])
      if (m.is_string()) methods.push_back(m.get<std::string>());
  } else {
    std::set<std::string> names;
    for (int s : seeds) {
      for (const auto& d : sub_dirs(seed_dir(root, s) / "eval"))
        if (d.filename() != "pseudo") names.insert(d.filename().string());
      for (const auto& d : sub_dirs(seed_dir(root, s) / "pred"))
        names.insert(d.filename().string());
    }
    methods = order_methods({names.begin(), names.end()});
  }
  c.page["methods"] = methods;

  collect_metrics(root, seeds, methods, results ? &*results : nullptr, opt.lesion_wise, c);
  if (results) {
    for (const char* key : {"paired", "pseudo", "timing", "wall_seconds"})
      if (results->contains(key)) c.page[key] = (*results)[key];
  }

  // Training runs of every seed.
  c.page["runs"] = nlohmann::json::array();
  for (int s : seeds)
    for (const auto& d : sub_dirs(seed_dir(root, s) / "runs")) {
      const std::string model = d.filename().string();
      c.page["runs"].push_back(
          run_entry(d, model + " (seed " + std::to_string(s) + ")", model, s, c.notes));
    }
  if (c.page["runs"].empty()) c.notes.push_back("no training runs (seed*/runs/*): no curves");

  // Viewer: the first seed that has predictions, plus any --pred folders.
  std::vector<std::pair<std::string, fs::path>> preds;
  for (int s : seeds) {
    preds = pred_folders(seed_dir(root, s));
    if (!preds.empty()) {
      c.viewer_seed = s;
      break;
    }
  }
  for (const auto& p : opt.pred) preds.emplace_back(folder_name(p), p);
  const fs::path cases = opt.cases.empty() ? root / "cohort" / "test" : fs::path(opt.cases);
  if (is_dir(cases))
    collect_viewer(cases, preds, c);
  else
    c.notes.push_back("no test cases at " + cases.string() + ": no slice viewer");
}

void collect_runs(const std::vector<fs::path>& run_dirs, const ReportOptions& opt, Collected& c) {
  c.page["runs"] = nlohmann::json::array();
  for (const auto& d : run_dirs) {
    const std::string name = folder_name(d.string());
    nlohmann::json r = run_entry(d, name.empty() ? "run" : name, "", -1, c.notes);
    std::string model;
    if (r.contains("config") && r["config"].is_object()) {
      const auto& cfg = r["config"].contains("options") ? r["config"]["options"] : r["config"];
      if (cfg.is_object() && cfg.contains("model") && cfg["model"].is_string())
        model = cfg["model"].get<std::string>();
    }
    r["model"] = model;
    c.page["runs"].push_back(r);
  }
  if (c.kind == "run" && c.page["runs"][0].contains("config"))
    c.page["config"] = c.page["runs"][0]["config"];
  c.notes.push_back(
      "a training run has no test-set metrics: no results table or box plots (run "
      "kdseg evaluate, or report on an experiment folder)");
  std::vector<std::pair<std::string, fs::path>> preds;
  for (const auto& p : opt.pred) preds.emplace_back(folder_name(p), p);
  if (!opt.cases.empty())
    collect_viewer(opt.cases, preds, c);
  else
    c.notes.push_back(
        "no test cases given (--cases DIR, with --pred DIR for predictions): "
        "no slice viewer");
}

}  // namespace

std::vector<std::string> order_methods(std::vector<std::string> methods) {
  static const std::vector<std::string> kOrder = {"unet",     "resunet", "resunet-vae", "cascade",
                                                  "ensemble", "student", "control"};
  auto rank = [](const std::string& m) {
    auto it = std::find(kOrder.begin(), kOrder.end(), m);
    return it == kOrder.end() ? kOrder.size() : static_cast<size_t>(it - kOrder.begin());
  };
  std::sort(methods.begin(), methods.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : a < b;
  });
  methods.erase(std::unique(methods.begin(), methods.end()), methods.end());
  return methods;
}

nlohmann::json read_log_curve(const std::string& log_csv, size_t max_rows) {
  const CsvTable t = read_csv(log_csv);
  const int val_col = t.column("val_mean_dice");
  const size_t stride = t.rows.size() > max_rows ? (t.rows.size() + max_rows - 1) / max_rows : 1;
  std::vector<size_t> keep;
  for (size_t i = 0; i < t.rows.size(); ++i) {
    const bool has_val = val_col >= 0 && !t.rows[i][static_cast<size_t>(val_col)].empty();
    if (i % stride == 0 || has_val || i + 1 == t.rows.size()) keep.push_back(i);
  }
  nlohmann::json out = nlohmann::json::object();
  for (size_t c = 0; c < t.header.size(); ++c) {
    nlohmann::json col = nlohmann::json::array();
    for (size_t i : keep) {
      const double v = parse_number(t.rows[i][c]);
      col.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
    }
    out[t.header[c]] = col;
  }
  return out;
}

Collected collect(const ReportOptions& opt) {
  const fs::path root(opt.run);
  if (opt.run.empty())
    throw Error("--run", "no folder given", "name an experiment or a training-run folder");
  if (!is_dir(root))
    throw Error(opt.run, "is not a folder",
                "give the --out folder of kdseg reproduce or of kdseg train");
  Collected c;
  c.page = nlohmann::json::object();
  c.page["source"] = fs::absolute(root).lexically_normal().string();
  const bool experiment = is_file(root / "results.json") || !seed_folders(root).empty();
  if (experiment) {
    collect_experiment(root, opt, c);
    return c;
  }
  if (is_file(root / "log.csv") || is_file(root / "config.json") || is_dir(root / "checkpoints")) {
    c.kind = "run";
    collect_runs({root}, opt, c);
    return c;
  }
  std::vector<fs::path> runs;
  for (const auto& d : sub_dirs(root))
    if (is_file(d / "log.csv")) runs.push_back(d);
  if (!runs.empty()) {
    c.kind = "runs";
    collect_runs(runs, opt, c);
    return c;
  }
  throw Error(opt.run,
              "is neither an experiment folder (results.json, seed<S>/) nor a training run "
              "(config.json, log.csv) nor a folder of runs",
              "give the --out folder of kdseg reproduce or of kdseg train (docs/outputs.md)");
}

}  // namespace kdseg::report
