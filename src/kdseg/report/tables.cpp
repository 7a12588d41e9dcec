#include "kdseg/report/tables.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>

#include "kdseg/eval/summary.h"
#include "kdseg/util/error.h"

namespace kdseg::report {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<std::string> split_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

// JSON number, or null for NaN and infinities (JSON has no NaN).
nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

}  // namespace

int CsvTable::column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int>(i);
  return -1;
}

std::vector<double> CsvTable::numbers(const std::string& name) const {
  const int c = column(name);
  std::vector<double> out;
  if (c < 0) return out;
  out.reserve(rows.size());
  for (const auto& r : rows) out.push_back(parse_number(r[static_cast<size_t>(c)]));
  return out;
}

CsvTable read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot be read");
  CsvTable t;
  std::string line;
  bool have_header = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> cells = split_line(line);
    if (!have_header) {
      t.header = std::move(cells);
      have_header = true;
      continue;
    }
    cells.resize(t.header.size());
    t.rows.push_back(std::move(cells));
  }
  if (!have_header)
    throw Error(path, "is empty: a CSV file with a header line was expected",
                "rerun the stage that writes it");
  return t;
}

double parse_number(const std::string& cell) {
  if (cell.empty()) return kNaN;
  char* end = nullptr;
  const double v = std::strtod(cell.c_str(), &end);
  if (end == cell.c_str() || *end != '\0') return kNaN;
  return v;
}

BoxStats box_stats(const std::vector<double>& values) {
  BoxStats b;
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values) {
    if (std::isnan(x))
      ++b.n_nan;
    else
      v.push_back(x);
  }
  std::sort(v.begin(), v.end());
  b.n = static_cast<int64_t>(v.size());
  if (v.empty()) {
    b.p25 = b.median = b.p75 = b.lo = b.hi = b.mean = kNaN;
    return b;
  }
  b.p25 = percentile_sorted(v, 25);
  b.median = percentile_sorted(v, 50);
  b.p75 = percentile_sorted(v, 75);
  const double iqr = b.p75 - b.p25;
  const double lo_fence = b.p25 - 1.5 * iqr, hi_fence = b.p75 + 1.5 * iqr;
  b.lo = b.p25;
  b.hi = b.p75;
  double sum = 0;
  for (double x : v) {
    sum += x;
    if (x < lo_fence || x > hi_fence)
      b.outliers.push_back(x);
    else {
      b.lo = std::min(b.lo, x);
      b.hi = std::max(b.hi, x);
    }
  }
  b.mean = sum / static_cast<double>(v.size());
  return b;
}

nlohmann::json to_json(const BoxStats& b) {
  nlohmann::json out = nlohmann::json::array();
  for (double x : b.outliers) out.push_back(num(x));
  return {{"p25", num(b.p25)}, {"median", num(b.median)}, {"p75", num(b.p75)}, {"lo", num(b.lo)},
          {"hi", num(b.hi)},   {"mean", num(b.mean)},     {"outliers", out},   {"n", b.n},
          {"n_nan", b.n_nan}};
}

const std::vector<std::string>& table_columns(bool lesion_wise) {
  static const std::vector<std::string> kColumns = {"dice_et", "dice_wt", "dice_tc",
                                                    "hd95_et", "hd95_wt", "hd95_tc"};
  static const std::vector<std::string> kWithLesions = [] {
    std::vector<std::string> c = kColumns;
    for (const auto& x : kColumns) c.push_back("lw_" + x);
    return c;
  }();
  return lesion_wise ? kWithLesions : kColumns;
}

bool lower_is_better(const std::string& column) {
  return column.rfind("hd95", 0) == 0 || column.rfind("lw_hd95", 0) == 0;
}

nlohmann::json results_table(
    const std::vector<std::string>& methods,
    const std::map<std::string, std::map<std::string, std::vector<double>>>& values,
    const std::vector<std::string>& aux, const std::vector<std::string>& columns_given) {
  const std::vector<std::string>& columns = columns_given.empty() ? table_columns() : columns_given;
  nlohmann::json table;
  table["columns"] = columns;
  table["rows"] = nlohmann::json::array();
  for (const auto& m : methods) {
    auto it = values.find(m);
    if (it == values.end()) continue;
    nlohmann::json row;
    row["method"] = m;
    row["aux"] = std::find(aux.begin(), aux.end(), m) != aux.end();
    row["cells"] = nlohmann::json::object();
    for (const auto& c : columns) {
      auto col = it->second.find(c);
      if (col == it->second.end()) continue;
      const Stats s = summarize(col->second);
      row["cells"][c] = {{"mean", num(s.mean)},
                         {"std", num(s.std)},
                         {"median", num(s.median)},
                         {"n", s.n},
                         {"n_nan", s.n_nan}};
    }
    table["rows"].push_back(row);
  }
  mark_best(table);
  return table;
}

void mark_best(nlohmann::json& table) {
  nlohmann::json best = nlohmann::json::object();
  for (const auto& col : table["columns"]) {
    const std::string c = col.get<std::string>();
    const bool lower = lower_is_better(c);
    double best_value = kNaN;
    for (const auto& row : table["rows"]) {
      if (row.value("aux", false) || !row["cells"].contains(c)) continue;
      const auto& mean = row["cells"][c]["mean"];
      if (!mean.is_number()) continue;
      const double v = mean.get<double>();
      if (std::isnan(best_value) || (lower ? v < best_value : v > best_value)) best_value = v;
    }
    if (std::isnan(best_value)) continue;
    best[c] = nlohmann::json::array();
    for (const auto& row : table["rows"]) {
      if (row.value("aux", false) || !row["cells"].contains(c)) continue;
      const auto& mean = row["cells"][c]["mean"];
      // Values equal at the precision the page shows (3 decimals for Dice, 2 for HD95) tie.
      const double scale = lower ? 1e2 : 1e3;
      if (mean.is_number() &&
          std::llround(mean.get<double>() * scale) == std::llround(best_value * scale))
        best[c].push_back(row["method"]);
    }
  }
  table["best"] = best;
}

}  // namespace kdseg::report
