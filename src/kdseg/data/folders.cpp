#include "kdseg/data/folders.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "kdseg/util/error.h"

namespace kdseg {
namespace fs = std::filesystem;
using nlohmann::json;

DataFolderSpec parse_data_arg(const std::string& arg) {
  DataFolderSpec s;
  s.dir = arg;
  const auto colon = arg.rfind(':');
  if (colon != std::string::npos && colon + 1 < arg.size()) {
    const std::string w = arg.substr(colon + 1);
    char* end = nullptr;
    const double v = std::strtod(w.c_str(), &end);
    if (end && *end == '\0') {
      if (!(v > 0) || !std::isfinite(v))
        throw Error("--data " + arg, "the weight after ':' must be a positive number",
                    "e.g. --data cohort/labeled:1 --data pseudo:0.5");
      s.dir = arg.substr(0, colon);
      s.weight = v;
    }
  }
  if (s.dir.empty()) throw Error("--data " + arg, "no folder given", "--data DIR[:W]");
  return s;
}

DataFolder open_data_folder(const DataFolderSpec& spec) {
  DataFolder f;
  f.dir = spec.dir;
  f.weight = spec.weight;
  Dataset ds = discover_dataset(spec.dir);  // throws when missing or empty
  if (ds.cases.empty())
    throw Error(spec.dir, "the data folder holds no case", "check the path given to --data");
  json meta;
  const fs::path dj = fs::path(ds.root.empty() ? spec.dir : ds.root) / "dataset.json";
  std::error_code ec;
  if (fs::exists(dj, ec)) {
    std::ifstream in(dj);
    try {
      in >> meta;
    } catch (const json::exception& e) {
      throw Error(dj.string(), std::string("not valid JSON: ") + e.what());
    }
    f.pseudo = meta.is_object() && meta.value("kind", "") == "pseudo";
  }
  std::map<std::string, json> entries;
  if (f.pseudo) {
    f.target = meta.value("target", std::string("hard"));
    if (f.target != "hard" && f.target != "soft")
      throw Error(dj.string(), "\"target\" must be \"hard\" or \"soft\", got \"" + f.target + "\"");
    const json cases = meta.value("cases", json::object());
    if (cases.is_object())
      for (auto& [id, e] : cases.items()) entries[id] = e;
    else if (cases.is_array())
      for (const auto& e : cases) entries[e.value("id", std::string())] = e;
  }
  std::vector<std::string> unlabelled;
  for (const auto& c : ds.cases) {
    if (c.held_out) continue;  // imagesTs/ of an MSD or nnU-Net dataset: its test set
    CaseInput in;
    in.files = c;
    in.convention = ds.labels;
    double conf = 1.0;
    if (f.pseudo && entries.count(c.id)) {
      const json& e = entries[c.id];
      conf = e.value("confidence", 1.0);
      const fs::path root(ds.root.empty() ? spec.dir : ds.root);
      if (f.target == "soft" && e.contains("soft"))
        in.soft = (root / e.at("soft").get<std::string>()).string();
      if (e.contains("ignore")) in.ignore = (root / e.at("ignore").get<std::string>()).string();
    }
    if (c.seg.empty()) unlabelled.push_back(c.id);
    f.cases.push_back(in);
    f.confidence.push_back(conf);
  }
  if (f.cases.empty())
    throw Error(spec.dir,
                "holds only imagesTs/ cases, the dataset's test set, which training leaves out",
                "train on a folder with imagesTr/ and labelsTr/");
  if (!unlabelled.empty()) {
    std::string ids;
    for (size_t i = 0; i < unlabelled.size() && i < 5; ++i) ids += (i ? ", " : "") + unlabelled[i];
    throw Error(spec.dir,
                std::to_string(unlabelled.size()) + " of " + std::to_string(f.cases.size()) +
                    " case(s) have no label map (" + ids + (unlabelled.size() > 5 ? ", ..." : "") +
                    "): an unlabelled folder cannot be trained on",
                "pass labelled folders, or pseudo-label this one first (kdseg pseudo-label)");
  }
  return f;
}

void drop_least_confident(DataFolder& f, double min_confidence, double drop_fraction) {
  if (!f.pseudo) return;
  if (!(drop_fraction >= 0 && drop_fraction < 1))
    throw Error("--drop-fraction", "must be in [0, 1)");
  std::vector<size_t> keep;
  for (size_t i = 0; i < f.cases.size(); ++i)
    if (f.confidence[i] >= min_confidence) keep.push_back(i);
  std::stable_sort(keep.begin(), keep.end(), [&](size_t a, size_t b) {
    return f.confidence[a] > f.confidence[b];  // cases are sorted by ID: ties stay in ID order
  });
  keep.resize(keep.size() - static_cast<size_t>(std::floor(keep.size() * drop_fraction)));
  std::sort(keep.begin(), keep.end());
  DataFolder out = f;
  out.cases.clear();
  out.confidence.clear();
  for (size_t i : keep) {
    out.cases.push_back(f.cases[i]);
    out.confidence.push_back(f.confidence[i]);
  }
  if (out.cases.empty())
    throw Error(f.dir, "no pseudo-labelled case is left after dropping the least confident",
                "lower --min-confidence");
  f = std::move(out);
}

TrainingData prepare_training_data(const TrainingDataOptions& opt, const PreprocessPlan& plan,
                                   const std::array<int64_t, 3>& patch) {
  if (opt.data.empty()) throw Error("--data", "no data folder given", "pass --data DIR[:W]");
  TrainingData td;
  std::vector<std::string> dirs, labelled, pseudo;
  std::map<std::string, std::string> folder_of;
  for (const auto& spec : opt.data) {
    DataFolder f = open_data_folder(spec);
    drop_least_confident(f, opt.min_confidence, opt.drop_fraction);
    for (const auto& c : f.cases) {
      auto [it, fresh] = folder_of.emplace(c.files.id, f.dir);
      if (!fresh)
        throw Error(f.dir, "case " + c.files.id + " is also in " + it->second,
                    "case IDs must be unique across --data folders");
      (f.pseudo ? pseudo : labelled).push_back(c.files.id);
    }
    dirs.push_back(f.dir);
    td.folders.push_back(std::move(f));
  }
  PreprocessCache cache(opt.cache_dir, plan);
  check_cache_location(cache.dir(), dirs);
  if (opt.splits_path.empty())
    td.splits = make_splits(labelled, pseudo, opt.test_ids, opt.split);
  else
    td.splits = load_or_make_splits(opt.splits_path, labelled, pseudo, opt.test_ids, opt.split);
  const std::set<std::string> train(td.splits.train.begin(), td.splits.train.end()),
      val(td.splits.validation.begin(), td.splits.validation.end());

  // One preprocessing pass over every case needed, then sorted into pools.
  std::vector<CaseInput> needed;
  std::vector<std::pair<int, int>> where;  // (folder, 0 train / 1 validation)
  for (size_t fi = 0; fi < td.folders.size(); ++fi)
    for (const auto& c : td.folders[fi].cases) {
      if (train.count(c.files.id))
        where.emplace_back(static_cast<int>(fi), 0);
      else if (val.count(c.files.id) && !td.folders[fi].pseudo)
        where.emplace_back(static_cast<int>(fi), 1);
      else
        continue;
      needed.push_back(c);
    }
  // The first case alone first: a patch larger than the volume fails after one case, not all.
  bool first_built = false;
  if (!needed.empty())
    check_patch(patch, cache.get(needed[0], &first_built)->geometry(), needed[0].files.id);
  auto cached = cache.get_all(needed, opt.threads, &td.n_built);
  td.n_built += first_built;
  for (const auto& f : td.folders) td.pools.push_back({f.dir, f.weight, {}});
  for (size_t i = 0; i < cached.size(); ++i) {
    check_patch(patch, cached[i]->geometry(), cached[i]->id());
    if (where[i].second == 0)
      td.pools[where[i].first].cases.push_back(cached[i]);
    else
      td.validation.push_back(cached[i]);
  }
  const bool any_set = std::any_of(td.pools.begin(), td.pools.end(),
                                   [](const SamplePool& p) { return p.weight > 0; });
  for (auto& p : td.pools)
    if (!(p.weight > 0)) p.weight = any_set ? 1.0 : static_cast<double>(p.cases.size());
  return td;
}

SamplePool prepare_unlabelled_pool(const std::vector<std::string>& dirs,
                                   const std::string& cache_dir, const PreprocessPlan& plan,
                                   const std::array<int64_t, 3>& patch, int threads, int* n_built) {
  SamplePool pool;
  pool.weight = 1.0;
  std::vector<CaseInput> inputs;
  std::map<std::string, std::string> folder_of;
  for (const auto& dir : dirs) {
    pool.name += (pool.name.empty() ? "" : ",") + dir;
    const Dataset ds = discover_dataset(dir);  // throws when missing
    size_t n = 0;
    for (const auto& c : ds.cases) {
      auto [it, fresh] = folder_of.emplace(c.id, dir);
      if (!fresh)
        throw Error(dir, "case " + c.id + " is also in " + it->second,
                    "case IDs must be unique across --unlabelled folders");
      CaseInput in;
      in.files = c;
      in.files.seg.clear();  // unlabelled: whatever label map it has is not used
      in.convention = ds.labels;
      inputs.push_back(in);
      ++n;
    }
    if (n == 0)
      throw Error(dir, "the unlabelled folder holds no case",
                  "check the path given to --unlabelled");
  }
  PreprocessCache cache(cache_dir, plan);
  check_cache_location(cache.dir(), dirs);
  int built = 0;
  pool.cases = cache.get_all(inputs, threads, &built);
  for (const auto& c : pool.cases) check_patch(patch, c->geometry(), c->id());
  if (n_built) *n_built = built;
  return pool;
}

}  // namespace kdseg
