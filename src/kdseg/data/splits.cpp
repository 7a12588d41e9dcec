#include "kdseg/data/splits.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "kdseg/data/random.h"
#include "kdseg/io/gzip.h"
#include "kdseg/util/error.h"

namespace kdseg {
using nlohmann::json;

namespace {

std::string join(const std::vector<std::string>& v, size_t max_items = 5) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max_items) s += ", ... (" + std::to_string(v.size()) + " in all)";
  return s;
}

}  // namespace

Splits make_splits(std::vector<std::string> labelled, const std::vector<std::string>& pseudo,
                   const std::vector<std::string>& test, const SplitOptions& opt) {
  if (!(opt.validation_fraction >= 0 && opt.validation_fraction < 1))
    throw Error("validation fraction",
                "must be in [0, 1), got " + std::to_string(opt.validation_fraction));
  std::sort(labelled.begin(), labelled.end());
  labelled.erase(std::unique(labelled.begin(), labelled.end()), labelled.end());
  data::CounterRng rng(data::mix64(opt.seed ^ 0x5157u));
  for (size_t i = labelled.size(); i > 1; --i)  // Fisher-Yates
    std::swap(labelled[i - 1], labelled[static_cast<size_t>(rng.below(static_cast<int64_t>(i)))]);
  const size_t n = labelled.size();
  size_t n_val = static_cast<size_t>(std::llround(n * opt.validation_fraction));
  if (opt.validation_fraction > 0 && n >= 2) n_val = std::max<size_t>(n_val, 1);
  n_val = std::min(n_val, n > 0 ? n - 1 : 0);  // keep at least one case to train on
  Splits s;
  s.seed = opt.seed;
  s.validation_fraction = opt.validation_fraction;
  s.validation.assign(labelled.begin(), labelled.begin() + n_val);
  s.train.assign(labelled.begin() + n_val, labelled.end());
  s.train.insert(s.train.end(), pseudo.begin(), pseudo.end());
  s.test = test;
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.validation.begin(), s.validation.end());
  std::sort(s.test.begin(), s.test.end());
  return s;
}

Splits read_splits(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot read the splits file");
  json j;
  try {
    f >> j;
  } catch (const json::exception& e) {
    throw Error(path, std::string("not valid JSON: ") + e.what());
  }
  Splits s;
  try {
    if (j.value("format", "") != "kdseg-splits")
      throw Error(path, "not a kdseg splits file (\"format\" must be \"kdseg-splits\")");
    if (j.value("version", int64_t{-1}) != kSplitsVersion)
      throw Error(path, "splits version " + j.value("version", json(nullptr)).dump() +
                            ", expected " + std::to_string(kSplitsVersion));
    s.seed = j.value("seed", s.seed);
    s.validation_fraction = j.value("validation_fraction", s.validation_fraction);
    j.at("train").get_to(s.train);
    j.at("validation").get_to(s.validation);
    if (j.contains("test")) j.at("test").get_to(s.test);
  } catch (const json::exception& e) {
    throw Error(path, std::string("bad splits file: ") + e.what(),
                "it needs \"train\" and \"validation\" lists of case IDs");
  }
  std::set<std::string> seen;
  for (const auto* list : {&s.train, &s.validation, &s.test})
    for (const auto& id : *list)
      if (!seen.insert(id).second)
        throw Error(path, "case " + id + " is listed twice", "each ID belongs to one split");
  return s;
}

void write_splits(const std::string& path, const Splits& s) {
  json j = {{"format", "kdseg-splits"},
            {"version", kSplitsVersion},
            {"seed", s.seed},
            {"validation_fraction", s.validation_fraction},
            {"train", s.train},
            {"validation", s.validation},
            {"test", s.test}};
  const std::string text = j.dump(2) + "\n";
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  write_file_atomic(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

Splits load_or_make_splits(const std::string& path, const std::vector<std::string>& labelled,
                           const std::vector<std::string>& pseudo,
                           const std::vector<std::string>& test, const SplitOptions& opt,
                           bool* made) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    Splits s = make_splits(labelled, pseudo, test, opt);
    write_splits(path, s);
    if (made) *made = true;
    return s;
  }
  if (made) *made = false;
  Splits s = read_splits(path);
  const std::set<std::string> lab(labelled.begin(), labelled.end()),
      pse(pseudo.begin(), pseudo.end());
  std::set<std::string> listed(s.train.begin(), s.train.end());
  listed.insert(s.validation.begin(), s.validation.end());
  listed.insert(s.test.begin(), s.test.end());

  std::vector<std::string> bad;
  for (const auto& id : s.validation)
    if (pse.count(id)) bad.push_back(id);
  if (!bad.empty())
    throw Error(path, "pseudo-labelled case(s) listed for validation: " + join(bad),
                "pseudo-labelled cases are never validated on; move them to \"train\"");
  for (const auto& id : labelled)
    if (!listed.count(id)) bad.push_back(id);
  if (!bad.empty())
    throw Error(path, "labelled case(s) of the data are not in the split: " + join(bad),
                "the data changed since the split was made: delete " + path +
                    " to make a new one, or add the IDs to it");
  for (const auto* list : {&s.train, &s.validation})
    for (const auto& id : *list)
      if (!lab.count(id) && !pse.count(id)) bad.push_back(id);
  if (!bad.empty())
    throw Error(path, "case(s) of the split are missing from the data: " + join(bad),
                "pass the data folders the split was made for, or delete " + path);
  for (const auto& id : pseudo)
    if (!listed.count(id)) s.train.push_back(id);
  std::sort(s.train.begin(), s.train.end());
  return s;
}

}  // namespace kdseg
