#include "kdseg/infer/predict.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

#include "kdseg/data/preprocess.h"
#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "kdseg/util/progress.h"

namespace kdseg {
namespace fs = std::filesystem;

LabelMap probabilities_to_labels(const at::Tensor& probs, const Volume& image, double threshold,
                                 const PostprocessOptions& post) {
  LabelMap labels = tensor_to_labels(regions_to_labels(probs, threshold), image);
  postprocess_labels(labels.data.data(), labels.dim, labels.spacing, post);
  return labels;
}

void write_probabilities(const std::string& path, const at::Tensor& probs, const Volume& image) {
  Volume v = tensor_to_volume(probs.to(at::kFloat).contiguous(), image);
  WriteOptions w;
  w.datatype = kNiftiUInt8;
  w.scl_slope = 1.0 / 255.0;
  write_volume(path, v, w);
}

nlohmann::json prediction_provenance(const PredictOptions& opt, const Ensemble& ensemble,
                                     const nlohmann::json& extra) {
  nlohmann::json models = nlohmann::json::array();
  for (const auto& m : ensemble.members())
    models.push_back({{"digest", m.digest}, {"weight", m.weight}, {"arch", m.info.arch}});
  const InferenceOptions& i = ensemble.options();
  nlohmann::json j = {{"models", models},
                      {"threshold", opt.threshold},
                      {"postprocess",
                       {{"et_min_mm3", opt.post.et_min_mm3},
                        {"min_component_fraction", opt.post.min_component_fraction},
                        {"min_component_mm3", opt.post.min_component_mm3}}},
                      {"tta", i.tta},
                      {"window", i.window},
                      {"overlap", i.overlap},
                      {"precision", i.bf16 ? "bf16" : "fp32"},
                      {"labels", opt.labels},
                      {"save_probs", opt.save_probs}};
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

std::string provenance_changes(const nlohmann::json& before, const nlohmann::json& now) {
  std::string out;
  auto add = [&](const std::string& k) { out += (out.empty() ? "" : ", ") + k; };
  for (auto it = now.begin(); it != now.end(); ++it)
    if (!before.contains(it.key()) || before[it.key()] != it.value()) add(it.key());
  for (auto it = before.begin(); it != before.end(); ++it)
    if (!now.contains(it.key())) add(it.key());
  return out;
}

PredictReport predict_cases(const PredictOptions& opt, const Ensemble& ensemble,
                            const std::vector<CaseFiles>& cases, const LabelConvention& labels,
                            const PredictHooks& hooks) {
  if (!(opt.threshold > 0 && opt.threshold < 1))
    throw Error("--threshold", "must be in (0, 1), got " + std::to_string(opt.threshold));
  const LabelConvention out_labels =
      opt.labels == "auto" ? labels : LabelConvention(parse_layout(opt.labels, "--labels"));
  if (!hooks.write) fs::create_directories(opt.out);
  auto is_done = hooks.is_done ? hooks.is_done : [&](const std::string& id) {
    return fs::exists(fs::path(opt.out) / (id + ".nii.gz"));
  };
  auto write = hooks.write ? hooks.write : [&](const CaseFiles& files, const CasePrediction& p) {
    LabelMap out = p.labels;
    labels_to_convention(out, out_labels);
    write_labels((fs::path(opt.out) / (files.id + ".nii.gz")).string(), out);
    if (opt.save_probs)
      write_probabilities((fs::path(opt.out) / (files.id + "_prob.nii.gz")).string(), p.probs,
                          p.data->image);
  };

  auto forget = hooks.forget ? hooks.forget : [&](const std::string& id) {
    fs::remove(fs::path(opt.out) / (id + ".nii.gz"));
  };

  // What the folder's outputs were made from: cases done from other inputs are redone, or the
  // command refuses, naming what changed.
  const std::string provenance_dir =
      hooks.provenance_dir.value_or(hooks.write ? std::string() : opt.out);
  std::vector<char> done;  // per case: its output is there
  for (const auto& c : cases) done.push_back(is_done(c.id));
  const bool any_done = std::find(done.begin(), done.end(), 1) != done.end();
  bool redo_all = opt.overwrite;
  if (!provenance_dir.empty()) {
    const nlohmann::json now = prediction_provenance(opt, ensemble, hooks.provenance_extra);
    const fs::path record = fs::path(provenance_dir) / "provenance.json";
    std::string changed;
    if (fs::exists(record)) {
      std::ifstream in(record);
      const nlohmann::json before = nlohmann::json::parse(in, nullptr, false);
      changed = before.is_discarded() ? "the record is not JSON" : provenance_changes(before, now);
    } else if (any_done) {
      changed = "no provenance.json: made by an older kdseg or by hand";
    }
    if (!changed.empty() && any_done && !opt.overwrite) {
      if (!opt.redo_if_changed)
        throw Error(provenance_dir,
                    "holds outputs made from other models or options (changed: " + changed + ")",
                    "pass --overwrite to redo every case, or choose another --out");
      if (!opt.quiet)
        std::fprintf(stderr, "predict: %s was made from other inputs (changed: %s): redoing it\n",
                     provenance_dir.c_str(), changed.c_str());
      redo_all = true;
    }
    if (redo_all)  // before the new record: an interrupted redo leaves no stale case "done"
      for (size_t k = 0; k < cases.size(); ++k)
        if (done[k]) forget(cases[k].id);
    fs::create_directories(provenance_dir);
    const std::string text = now.dump(2) + "\n";
    write_file_atomic(record.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
  }

  PredictReport report;
  report.engines = ensemble.engines();
  report.tta = ensemble.tta();
  if (!opt.quiet) {
    std::string line;
    for (const auto& e : report.engines) line += (line.empty() ? "" : "; ") + e;
    std::fprintf(stderr, "predict: %s; %s\n", line.c_str(), report.tta.c_str());
  }
  std::vector<const CaseFiles*> todo;
  for (size_t k = 0; k < cases.size(); ++k) {
    if (!redo_all && done[k])
      report.skipped.push_back(cases[k].id);
    else
      todo.push_back(&cases[k]);
  }
  if (!report.skipped.empty() && !opt.quiet)
    std::fprintf(stderr, "predict: %zu case(s) already done, skipped (--overwrite redoes them)\n",
                 report.skipped.size());
  Progress progress("predict", static_cast<int64_t>(todo.size()), opt.quiet);
  auto load = [&](size_t i) {
    return std::async(std::launch::async,
                      [&, i] { return load_case(*todo[i], labels, opt.read_threads); });
  };
  std::future<CaseData> next;
  if (!todo.empty()) next = load(0);
  for (size_t i = 0; i < todo.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string& id = todo[i]->id;
    try {
      CaseData data = next.get();
      if (i + 1 < todo.size()) next = load(i + 1);
      CasePrediction p;
      p.data = &data;
      p.probs = ensemble.predict_case(data);
      p.labels = probabilities_to_labels(p.probs, data.image, opt.threshold, opt.post);
      write(*todo[i], p);
      report.written.push_back(id);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      progress.done(id, "ok " + format_seconds(s));
    } catch (const std::exception& e) {
      if (i + 1 < todo.size() && !next.valid()) next = load(i + 1);
      report.failures.push_back(id + ": " + e.what());
      progress.done(id, std::string("FAILED: ") + e.what());
    }
  }
  return report;
}

PredictReport predict_files(const PredictOptions& opt) {
  const char* flags[kNumModalities] = {"--t1", "--t1ce", "--t2", "--flair"};
  for (int m = 0; m < kNumModalities; ++m)
    if (opt.files[m].empty())
      throw Error(flags[m], "missing", "one case needs --t1, --t1ce, --t2 and --flair");
  const fs::path out(opt.out);
  const std::string name = out.filename().string();
  const std::string stem = nifti_stem(name);
  if (stem == name || stem.empty())
    throw Error("--out " + opt.out, "must name a .nii.gz or .nii file when --t1 ... are given");
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
  CaseFiles files;
  files.id = stem;
  for (int m = 0; m < kNumModalities; ++m) files.image[m] = opt.files[m];
  const LabelConvention labels = opt.labels == "auto"
                                     ? LabelConvention()
                                     : LabelConvention(parse_layout(opt.labels, "--labels"));
  PredictHooks hooks;
  hooks.is_done = [](const std::string&) { return false; };
  hooks.write = [&](const CaseFiles&, const CasePrediction& p) {
    LabelMap labelled = p.labels;
    labels_to_convention(labelled, labels);
    write_labels(opt.out, labelled);
    if (opt.save_probs)
      write_probabilities((out.parent_path() / (stem + "_prob.nii.gz")).string(), p.probs,
                          p.data->image);
  };
  Ensemble ensemble(opt.models, opt.weights, opt.inference);
  return predict_cases(opt, ensemble, {files}, labels, hooks);
}

PredictReport predict_folder(const PredictOptions& opt) {
  if (opt.out.empty()) throw Error("--out", "no output folder given");
  Dataset ds = discover_dataset(opt.in);
  Ensemble ensemble(opt.models, opt.weights, opt.inference);
  return predict_cases(opt, ensemble, ds.cases, ds.labels);
}

}  // namespace kdseg
