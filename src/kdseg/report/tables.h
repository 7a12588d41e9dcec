#pragma once
// The numbers of the report, as pure functions: CSV files the stages write (metrics.csv, log.csv),
// box-plot statistics, the results table with its best value per column.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdseg::report {

// A CSV file with a header line; cells as written (no quoting: kdseg writes none).
struct CsvTable {
  std::vector<std::string> header;             // e.g. {"id", "dice_et", ...}
  std::vector<std::vector<std::string>> rows;  // each as long as the header (short rows padded)
  int column(const std::string& name) const;   // index in header, -1 when absent
  // The column as numbers (parse_number); empty when the column is absent.
  std::vector<double> numbers(const std::string& name) const;
};

// Reads `path`; throws kdseg::Error naming the file when it cannot be read or has no header.
CsvTable read_csv(const std::string& path);
// "0.81" -> 0.81; "", "nan", "NaN", or anything not a number -> NaN.
double parse_number(const std::string& cell);

// A box of the paper's Fig. 4: quartiles by linear interpolation (eval/summary.h), Tukey whiskers
// (the furthest values within 1.5 IQR of the box), and the values beyond them.
struct BoxStats {
  double p25 = 0, median = 0, p75 = 0;  // NaN when n == 0
  double lo = 0, hi = 0;                // whisker ends, e.g. 0.61 and 0.93
  double mean = 0;
  std::vector<double> outliers;  // values outside [lo, hi], ascending
  int64_t n = 0;                 // values used (NaN left out), e.g. 20
  int64_t n_nan = 0;             // NaN values left out
};
BoxStats box_stats(const std::vector<double>& values);
nlohmann::json to_json(const BoxStats& b);

// The columns of the results table, in order: Dice then HD95 for ET, WT, TC; with `lesion_wise`
// then the lesion-wise Dice and HD95 (lw_dice_*, lw_hd95_*: kdseg evaluate's, eval/lesion.h).
const std::vector<std::string>& table_columns(bool lesion_wise = false);
// True for the columns where lower is better (HD95, whole-volume or lesion-wise).
bool lower_is_better(const std::string& column);

// values[method][column] = per-case values (pooled over seeds). Returns
// {"columns": [...], "rows": [{"method", "cells": {col: {"mean","std","median","n","n_nan"}}}],
//  "best": {col: [methods with the best mean]}}. Methods in `aux` (e.g. "pseudo-labels") get a
// row but are never marked best. `columns` defaults to table_columns(); a column a method lacks
// (e.g. lesion-wise scores that were not computed) is left out of its "cells".
nlohmann::json results_table(
    const std::vector<std::string>& methods,
    const std::map<std::string, std::map<std::string, std::vector<double>>>& values,
    const std::vector<std::string>& aux = {}, const std::vector<std::string>& columns = {});

// Marks the best mean of each column among the rows of `table` (a results_table, or one built
// from results.json) whose "aux" is not true, for each of table["columns"]: sets table["best"].
void mark_best(nlohmann::json& table);

}  // namespace kdseg::report
