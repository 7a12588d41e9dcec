#include "kdseg/infer/predict.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <future>

#include "kdseg/data/preprocess.h"
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

PredictReport predict_cases(const PredictOptions& opt, const Ensemble& ensemble,
                            const std::vector<CaseFiles>& cases, Layout layout,
                            const PredictHooks& hooks) {
  if (!(opt.threshold > 0 && opt.threshold < 1))
    throw Error("--threshold", "must be in (0, 1), got " + std::to_string(opt.threshold));
  const Layout out_layout = opt.labels == "auto" ? layout : parse_layout(opt.labels, "--labels");
  fs::create_directories(opt.out);
  auto is_done = hooks.is_done ? hooks.is_done : [&](const std::string& id) {
    return fs::exists(fs::path(opt.out) / (id + ".nii.gz"));
  };
  auto write =
      hooks.write ? hooks.write : [&](const CaseFiles& files, Layout, const CasePrediction& p) {
        LabelMap out = p.labels;
        labels_to_convention(out, out_layout);
        write_labels((fs::path(opt.out) / (files.id + ".nii.gz")).string(), out);
        if (opt.save_probs)
          write_probabilities((fs::path(opt.out) / (files.id + "_prob.nii.gz")).string(), p.probs,
                              p.data->image);
      };

  PredictReport report;
  std::vector<const CaseFiles*> todo;
  for (const auto& c : cases) {
    if (!opt.overwrite && is_done(c.id))
      report.skipped.push_back(c.id);
    else
      todo.push_back(&c);
  }
  if (!report.skipped.empty() && !opt.quiet)
    std::fprintf(stderr, "predict: %zu case(s) already done, skipped (--overwrite redoes them)\n",
                 report.skipped.size());
  Progress progress("predict", static_cast<int64_t>(todo.size()), opt.quiet);
  auto load = [&](size_t i) {
    return std::async(std::launch::async,
                      [&, i] { return load_case(*todo[i], layout, opt.read_threads); });
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
      write(*todo[i], layout, p);
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

PredictReport predict_folder(const PredictOptions& opt) {
  if (opt.out.empty()) throw Error("--out", "no output folder given");
  Dataset ds = discover_dataset(opt.in);
  Ensemble ensemble(opt.models, opt.weights, opt.inference);
  return predict_cases(opt, ensemble, ds.cases, ds.layout);
}

}  // namespace kdseg
