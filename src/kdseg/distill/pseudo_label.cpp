#include "kdseg/distill/pseudo_label.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "kdseg/data/preprocess.h"
#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_json_atomic(const fs::path& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// Rebuilds OUT/dataset.json from every OUT/<ID>/pseudo.json.
int write_dataset_json(const fs::path& out, const PseudoLabelOptions& opt,
                       const Ensemble& ensemble) {
  std::map<std::string, json> cases;
  for (const auto& entry : fs::directory_iterator(out)) {
    const fs::path pj = entry.path() / "pseudo.json";
    if (!entry.is_directory() || !fs::exists(pj)) continue;
    json j = json::parse(std::ifstream(pj.string()));
    const std::string id = j.at("id").get<std::string>();
    j.erase("id");
    cases[id] = j;
  }
  json teachers = json::array();
  for (const auto& m : ensemble.members())
    teachers.push_back(
        {{"path", m.path}, {"digest", m.digest}, {"weight", m.weight}, {"arch", m.info.arch}});
  json cj = json::object();
  for (auto& [id, j] : cases) cj[id] = j;
  write_json_atomic(out / "dataset.json", {{"kind", "pseudo"},
                                           {"format_version", 1},
                                           {"target", opt.target},
                                           {"threshold", opt.predict.threshold},
                                           {"ignore_band", opt.ignore_band},
                                           {"teachers", teachers},
                                           {"cases", cj}});
  return static_cast<int>(cases.size());
}

}  // namespace

std::pair<int, int> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  try {
    if (slash != std::string::npos) {
      size_t a = 0, b = 0;
      const int i = std::stoi(text.substr(0, slash), &a), n = std::stoi(text.substr(slash + 1), &b);
      if (a == slash && b == text.size() - slash - 1 && n >= 1 && i >= 0 && i < n) return {i, n};
    }
  } catch (const std::exception&) {
  }
  throw Error("--shard", "\"" + text + "\" is not i/N with 0 <= i < N", "e.g. --shard 0/4");
}

double case_confidence(const at::Tensor& probs) {
  at::Tensor p = probs.to(at::kFloat).clamp(1e-6, 1 - 1e-6);
  at::Tensor region = ((p > 0.1) & (p < 0.9)).any(0) | (p > 0.5).any(0);
  const int64_t n = region.sum().item<int64_t>();
  if (n == 0) return 1.0;
  at::Tensor h = -(p * torch::log2(p) + (1 - p) * torch::log2(1 - p));  // bits per region
  return 1.0 - (h.mean(0).masked_select(region)).mean().item<double>();
}

at::Tensor uncertain_mask(const at::Tensor& probs, double threshold, double band) {
  return ((probs.to(at::kFloat) - threshold).abs() < band).any(0).to(at::kByte);
}

PseudoLabelReport pseudo_label(const PseudoLabelOptions& opt) {
  if (opt.target != "hard" && opt.target != "soft")
    throw Error("--target", "\"" + opt.target + "\" is neither hard nor soft");
  if (!(opt.ignore_band >= 0 && opt.ignore_band < 0.5))
    throw Error("--ignore-band", "must be in [0, 0.5)");
  if (opt.target == "soft" && opt.ignore_band > 0 && !opt.soft_with_ignore)
    throw Error("--target soft --ignore-band " + json(opt.ignore_band).dump(),
                "the ignore mask zeroes the loss exactly at the uncertain voxels, where soft "
                "targets differ from hard ones: the soft targets would carry almost nothing",
                "choose one (soft targets, or hard targets with an ignore band), or pass "
                "--soft-with-ignore-band to keep both");
  if (opt.n_shards < 1 || opt.shard < 0 || opt.shard >= opt.n_shards)
    throw Error("--shard", "must be i/N with 0 <= i < N");
  const PredictOptions& po = opt.predict;
  if (po.out.empty()) throw Error("--out", "no output folder given");
  Dataset ds = discover_dataset(po.in);
  if (fs::weakly_canonical(po.out) == fs::weakly_canonical(po.in))
    throw Error("--out", "must differ from --in", "write the pseudo-labels to a new folder");
  std::vector<CaseFiles> mine;
  for (size_t k = 0; k < ds.cases.size(); ++k)
    if (static_cast<int>(k % static_cast<size_t>(opt.n_shards)) == opt.shard)
      mine.push_back(ds.cases[k]);
  Ensemble ensemble(po.models, po.weights, po.inference);
  const fs::path out(po.out);
  fs::create_directories(out);

  PredictHooks hooks;
  hooks.is_done = [&](const std::string& id) { return fs::exists(out / id / "pseudo.json"); };
  hooks.forget = [&](const std::string& id) { fs::remove(out / id / "pseudo.json"); };
  hooks.provenance_dir = out.string();  // the teachers and what the labels were made with
  hooks.provenance_extra = {{"target", opt.target},
                            {"ignore_band", opt.ignore_band},
                            {"soft_with_ignore", opt.soft_with_ignore}};
  hooks.write = [&](const CaseFiles& files, const CasePrediction& p) {
    const fs::path dir = out / files.id;
    fs::create_directories(dir);
    const std::string stem = (dir / files.id).string();
    static const char* kSuffix[] = {"_t1", "_t1ce", "_t2", "_flair"};
    for (int m = 0; m < kNumModalities; ++m) {
      const fs::path to = stem + kSuffix[m] + ".nii.gz";
      if (files.frame[m] < 0 && files.image[m].size() > 7 &&
          files.image[m].substr(files.image[m].size() - 7) == ".nii.gz") {
        link_or_copy(files.image[m], to.string());
      } else {  // a frame of a 4D file, or an uncompressed .nii: written as its own volume
        Volume v = like<float>(p.data->image, 1);
        std::copy(p.data->image.channel(m), p.data->image.channel(m) + v.n_voxels(),
                  v.data.begin());
        write_volume(to.string(), v);
      }
    }
    write_labels(stem + "_seg.nii.gz", p.labels);
    json entry = {{"id", files.id}, {"confidence", case_confidence(p.probs)}};
    if (opt.target == "soft") {
      write_probabilities(stem + "_soft.nii.gz", p.probs, p.data->image);
      entry["soft"] = files.id + "/" + files.id + "_soft.nii.gz";
    }
    if (opt.ignore_band > 0) {
      LabelMap ignore =
          tensor_to_labels(uncertain_mask(p.probs, po.threshold, opt.ignore_band), p.data->image);
      write_labels(stem + "_ignore.nii.gz", ignore);
      entry["ignore"] = files.id + "/" + files.id + "_ignore.nii.gz";
    }
    write_json_atomic(dir / "pseudo.json", entry);
  };
  PseudoLabelReport report;
  report.predict = predict_cases(po, ensemble, mine, ds.labels, hooks);
  report.dataset_json = (out / "dataset.json").string();
  report.n_cases = write_dataset_json(out, opt, ensemble);
  return report;
}

}  // namespace kdseg
