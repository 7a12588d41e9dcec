#include "kdseg/eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

#include "kdseg/eval/metrics.h"
#include "kdseg/eval/summary.h"
#include "kdseg/io/dataset.h"
#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/progress.h"

namespace kdseg {

namespace fs = std::filesystem;

namespace {

struct References {
  std::vector<std::pair<std::string, std::string>> maps;  // (id, path)
  LabelConvention convention = Layout::brats2021;
  std::vector<std::string> unlabelled;  // reference cases without a label map
  // BraTS 2023/2024 data: the challenges that rank by lesion-wise scores.
  bool lesion_wise_by_default = false;
};

// The label convention of an nnU-Net or MSD folder's dataset.json, if `dir` holds one.
std::optional<LabelConvention> dataset_json_labels(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / "dataset.json", ec)) return std::nullopt;
  return nnunet_dataset_json((dir / "dataset.json").string(), /*need_channels=*/false).labels;
}

References find_references(const std::string& ref, const std::string& labels_flag) {
  References r;
  std::error_code ec;
  if (!fs::is_directory(ref, ec)) throw Error(ref, "no such folder", "--ref takes a folder");
  const fs::path root(ref);
  fs::path abs = fs::absolute(root).lexically_normal();
  if (abs.filename().empty()) abs = abs.parent_path();  // "labelsTr/"
  if (fs::is_directory(root / "labelsTr", ec)) {
    // MSD or nnU-Net: labelsTr/, values as the dataset says (dataset.json for nnU-Net).
    r.convention = Layout::msd;
    if (labels_flag == "auto") {
      if (fs::is_directory(root / "imagesTr", ec) || fs::is_directory(root / "imagesTs", ec))
        r.convention = discover_dataset(ref).labels;
      else if (auto c = dataset_json_labels(root))
        r.convention = *c;
    }
    r.maps = discover_label_maps((root / "labelsTr").string());
  } else if (labels_flag == "auto" &&
             (abs.filename() == "labelsTr" || abs.filename() == "labelsTs") &&
             fs::is_regular_file(abs.parent_path() / "dataset.json", ec)) {
    // An nnU-Net dataset's labelsTr/ or labelsTs/ given directly.
    r.convention = *dataset_json_labels(abs.parent_path());
    r.maps = discover_label_maps(ref);
  } else {
    r.maps = discover_label_maps(ref);
    bool dashed = false;
    for (auto& [id, path] : r.maps) dashed |= path.find(id + "-seg.nii") != std::string::npos;
    r.convention = dashed ? Layout::brats2023 : Layout::brats2021;
    // Case folders with images but no label map are reported, not dropped silently.
    try {
      Dataset ds = discover_dataset(ref);
      for (const auto& c : ds.cases)
        if (c.seg.empty()) r.unlabelled.push_back(c.id);
    } catch (const Error&) {
      // A folder of label maps only (e.g. a cohort's hidden/): nothing more to learn.
    }
  }
  if (labels_flag != "auto") r.convention = parse_layout(labels_flag, "--ref-labels");
  r.lesion_wise_by_default = r.convention.name == "brats2023" || r.convention.name == "brats2024";
  if (r.maps.empty())
    throw Error(ref, "holds no reference label maps",
                "expected <ID>/<ID>_seg.nii.gz, <ID>/<ID>-seg.nii.gz, labelsTr/<ID>.nii.gz or "
                "<ID>.nii.gz files");
  return r;
}

std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void write_text(const fs::path& path, const std::string& text) {
  write_file_atomic(path.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace

EvaluateReport evaluate(const EvaluateOptions& opt) {
  EvaluateReport report;
  report.columns = metric_columns();
  if (opt.lesion_wise != "auto" && opt.lesion_wise != "on" && opt.lesion_wise != "off")
    throw Error("--lesion-wise", "\"" + opt.lesion_wise + "\" is not auto, on or off");
  if (opt.lesion.dilation < 0 || !(opt.lesion.min_volume_mm3 >= 0))
    throw Error("--lesion-dilation / --lesion-min-volume", "must not be negative",
                "e.g. --lesion-dilation 3 --lesion-min-volume 50 (BraTS-GLI)");
  References refs = find_references(opt.ref, opt.ref_labels);
  const LabelConvention pred_conv =
      opt.pred_labels == "auto" ? refs.convention : parse_layout(opt.pred_labels, "--pred-labels");
  report.lesion_wise =
      opt.lesion_wise == "on" || (opt.lesion_wise == "auto" && refs.lesion_wise_by_default);
  report.lesion = opt.lesion;
  if (report.lesion_wise)
    for (const auto& c : lesion_metric_columns()) report.columns.push_back(c);
  auto preds = discover_label_maps(opt.pred);
  if (preds.empty())
    throw Error(opt.pred, "holds no predictions",
                "expected <ID>.nii.gz files (the BraTS submission format) or case folders");

  std::map<std::string, std::string> pred_of(preds.begin(), preds.end());
  std::map<std::string, std::string> ref_of(refs.maps.begin(), refs.maps.end());
  for (const auto& id : refs.unlabelled)
    report.failures.push_back(id + ": reference case has no label map");
  for (const auto& [id, path] : preds)
    if (!ref_of.count(id)) report.failures.push_back(path + ": no reference case " + id);
  std::vector<std::pair<std::string, std::string>> todo;  // (id, ref path)
  for (const auto& [id, path] : refs.maps) {
    if (!pred_of.count(id))
      report.failures.push_back(id + ": no prediction in " + opt.pred);
    else
      todo.emplace_back(id, path);
  }

  std::vector<std::vector<double>> rows(todo.size());
  std::vector<std::string> errors(todo.size());
  std::vector<uint8_t> ref_rc(todo.size(), 0), pred_rc(todo.size(), 0);  // holds a cavity
  Progress progress("evaluate", static_cast<int64_t>(todo.size()), opt.quiet);
  parallel_for(static_cast<int64_t>(todo.size()), opt.threads, [&](int64_t i) {
    const auto& [id, ref_path] = todo[i];
    const std::string& pred_path = pred_of.at(id);  // read-only lookups: safe across threads
    try {
      int64_t n_ref_rc = 0, n_pred_rc = 0;
      LabelMap ref = load_label_map(ref_path, refs.convention, &n_ref_rc);
      LabelMap pred = load_label_map(pred_path, pred_conv, &n_pred_rc);
      ref_rc[i] = n_ref_rc > 0;
      pred_rc[i] = n_pred_rc > 0;
      if (pred.dim != ref.dim || !same_grid(pred, ref, 1e-2)) {
        throw Error(pred_path,
                    "grid " + shape_text(pred.dim) + " differs from the reference's " +
                        shape_text(ref.dim) + " (" + ref_path + ")",
                    "predictions must be written on the reference's grid; kdseg does not "
                    "resample when scoring");
      }
      rows[i] = score_case(pred.data.data(), ref.data.data(), ref.dim, ref.spacing).values();
      if (report.lesion_wise)
        for (double v : score_case_lesion_wise(pred.data.data(), ref.data.data(), ref.dim,
                                               ref.spacing, opt.lesion)
                            .values())
          rows[i].push_back(v);
      progress.done(id, "ok");
    } catch (const std::exception& e) {
      errors[i] = e.what();
      progress.done(id, "FAILED");
    }
  });
  int n_ref_rc = 0, n_pred_rc = 0;
  for (size_t i = 0; i < todo.size(); ++i) {
    n_ref_rc += ref_rc[i];
    n_pred_rc += pred_rc[i];
    if (!errors[i].empty()) {
      report.failures.push_back(errors[i]);
    } else {
      report.ids.push_back(todo[i].first);
      report.rows.push_back(std::move(rows[i]));
    }
  }

  // metrics.csv: id, then one column per metric and region.
  std::ostringstream csv;
  csv << "id";
  for (const auto& c : report.columns) csv << "," << c;
  csv << "\n";
  for (size_t i = 0; i < report.ids.size(); ++i) {
    csv << report.ids[i];
    for (double v : report.rows[i]) csv << "," << csv_number(v);
    csv << "\n";
  }
  // summary.json: statistics per column (NaN left out and counted).
  nlohmann::json cols = nlohmann::json::object();
  for (size_t c = 0; c < report.columns.size(); ++c) {
    std::vector<double> v;
    for (const auto& row : report.rows) v.push_back(row[c]);
    Stats s = summarize(v);
    auto num = [](double x) { return std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x); };
    cols[report.columns[c]] = {
        {"mean", num(s.mean)}, {"std", num(s.std)}, {"median", num(s.median)}, {"p25", num(s.p25)},
        {"p75", num(s.p75)},   {"n", s.n},          {"n_nan", s.n_nan}};
  }
  // A BraTS 2023-style convention that met cavities is BraTS 2024's.
  auto shown = [](const LabelConvention& c, int n_rc) {
    return c.name == "brats2023" && n_rc > 0 ? std::string("brats2024") : c.name;
  };
  report.summary = {{"n_cases", report.ids.size()},
                    {"failures", report.failures},
                    {"pred", opt.pred},
                    {"ref", opt.ref},
                    {"pred_labels", shown(pred_conv, n_pred_rc)},
                    {"ref_labels", shown(refs.convention, n_ref_rc)},
                    {"hd95_empty_mm", kHd95Empty},
                    {"columns", cols}};
  if (refs.convention.resection_cavity >= 0 || pred_conv.resection_cavity >= 0)
    report.summary["resection_cavity_cases"] = {{"ref", n_ref_rc}, {"pred", n_pred_rc}};
  report.summary["lesion_wise"] =
      report.lesion_wise
          ? nlohmann::json{{"definition", "BraTS 2023 challenge (docs/lesion_wise.md)"},
                           {"dilation", opt.lesion.dilation},
                           {"min_volume_mm3", opt.lesion.min_volume_mm3},
                           {"hd95_missed_mm", kLesionHd95Missed}}
          : nlohmann::json(false);
  std::error_code ec;
  fs::create_directories(opt.out, ec);
  if (ec) throw Error(opt.out, "cannot create the output folder: " + ec.message());
  write_text(fs::path(opt.out) / "metrics.csv", csv.str());
  write_text(fs::path(opt.out) / "summary.json", report.summary.dump(2) + "\n");
  return report;
}

std::string format_summary_table(const EvaluateReport& report) {
  std::ostringstream s;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-4s %-26s %-26s %-26s\n", "", "Dice", "HD95 (mm)",
                "Sensitivity");
  s << buf;
  // "mean ± std (med median)" of column <col>_<region> of the summary, or n/a.
  auto cell = [&](const std::string& col, const char* region, const char* fmt) {
    const auto& c = report.summary["columns"][col + "_" + region];
    if (c["mean"].is_null()) return std::string("n/a");
    char b[64];
    std::snprintf(b, sizeof b, fmt, c["mean"].get<double>(),
                  c["std"].is_null() ? 0.0 : c["std"].get<double>(), c["median"].get<double>());
    return std::string(b);
  };
  for (const char* region : {"et", "wt", "tc"}) {
    std::string name = region;
    for (auto& ch : name) ch = static_cast<char>(toupper(ch));
    std::snprintf(buf, sizeof buf, "%-4s %-26s %-26s %-26s\n", name.c_str(),
                  cell("dice", region, "%.3f ± %.3f (med %.3f)").c_str(),
                  cell("hd95", region, "%.1f ± %.1f (med %.1f)").c_str(),
                  cell("sens", region, "%.3f ± %.3f (med %.3f)").c_str());
    s << buf;
  }
  if (report.lesion_wise) {
    char head[160];
    std::snprintf(head, sizeof head,
                  "Lesion-wise (BraTS 2023: lesions joined by a %d-voxel dilation, > %g mm³):\n",
                  report.lesion.dilation, report.lesion.min_volume_mm3);
    s << head;
    std::snprintf(buf, sizeof buf, "%-4s %-26s %-26s %s\n", "", "Dice", "HD95 (mm)",
                  "lesions found / missed / false");
    s << buf;
    for (const char* region : {"et", "wt", "tc"}) {
      auto total = [&](const std::string& col) {
        const auto it = std::find(report.columns.begin(), report.columns.end(), col + "_" + region);
        const size_t k = static_cast<size_t>(it - report.columns.begin());
        double sum = 0;
        for (const auto& row : report.rows) sum += row[k];
        return static_cast<long long>(sum);
      };
      std::string name = region;
      for (auto& ch : name) ch = static_cast<char>(toupper(ch));
      std::snprintf(buf, sizeof buf, "%-4s %-26s %-26s %lld / %lld / %lld\n", name.c_str(),
                    cell("lw_dice", region, "%.3f ± %.3f (med %.3f)").c_str(),
                    cell("lw_hd95", region, "%.1f ± %.1f (med %.1f)").c_str(), total("lw_tp"),
                    total("lw_fn"), total("lw_fp"));
      s << buf;
    }
  }
  s << "mean ± std (median) over " << report.ids.size() << " case(s) scored";
  if (!report.failures.empty()) s << ", " << report.failures.size() << " failed";
  s << "\n";
  return s.str();
}

}  // namespace kdseg
