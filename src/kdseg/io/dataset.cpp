#include "kdseg/io/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"

namespace kdseg {

namespace fs = std::filesystem;

const std::array<const char*, kNumModalities> kModalityNames{"t1", "t1ce", "t2", "flair"};

namespace {

// File-name suffixes of each modality, in internal order T1, T1ce, T2, FLAIR.
const std::array<const char*, kNumModalities> kBrats2021Suffix{"_t1", "_t1ce", "_t2", "_flair"};
const std::array<const char*, kNumModalities> kBrats2023Suffix{"-t1n", "-t1c", "-t2w", "-t2f"};

bool is_nifti_name(const std::string& name) {
  auto ends = [&](const char* s) {
    std::string x(s);
    return name.size() > x.size() && name.compare(name.size() - x.size(), x.size(), x) == 0;
  };
  return (ends(".nii.gz") || ends(".nii")) && name.rfind("._", 0) != 0;
}

// The NIfTI file <folder>/<stem>.nii.gz or .nii, if present.
std::string find_nifti(const fs::path& folder, const std::string& stem) {
  for (const char* ext : {".nii.gz", ".nii"}) {
    fs::path p = folder / (stem + ext);
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

std::vector<fs::path> sorted_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// A case folder of a BraTS layout: which layout its file names follow, if any.
std::optional<Layout> brats_layout_of(const fs::path& folder) {
  const std::string id = folder.filename().string();
  int n2021 = 0, n2023 = 0;
  for (int m = 0; m < kNumModalities; ++m) {
    if (!find_nifti(folder, id + kBrats2021Suffix[m]).empty()) ++n2021;
    if (!find_nifti(folder, id + kBrats2023Suffix[m]).empty()) ++n2023;
  }
  if (n2021 == 0 && n2023 == 0) return std::nullopt;
  return n2023 > n2021 ? Layout::brats2023 : Layout::brats2021;
}

CaseFiles brats_case(const fs::path& folder, Layout layout, std::vector<std::string>& problems) {
  CaseFiles c;
  c.id = folder.filename().string();
  const auto& suffix = layout == Layout::brats2023 ? kBrats2023Suffix : kBrats2021Suffix;
  for (int m = 0; m < kNumModalities; ++m) {
    c.image[m] = find_nifti(folder, c.id + suffix[m]);
    if (c.image[m].empty())
      problems.push_back((folder / (c.id + suffix[m] + ".nii.gz")).string() +
                         ": missing modality " + kModalityNames[m]);
  }
  c.seg = find_nifti(folder, c.id + (layout == Layout::brats2023 ? "-seg" : "_seg"));
  return c;
}

// A name reduced to lower-case letters and digits, British spellings made American: "Tumour
// Core" -> "tumorcore", "T1-Gd" -> "t1gd", "peritumoral oedema" -> "peritumoraledema".
std::string squash(const std::string& name) {
  std::string out;
  for (char ch : name)
    if (std::isalnum(static_cast<unsigned char>(ch)))
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (auto [from, to] :
       {std::pair<const char*, const char*>{"tumour", "tumor"}, {"oedema", "edema"}})
    for (size_t at; (at = out.find(from)) != std::string::npos;)
      out.replace(at, std::string(from).size(), to);
  return out;
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// A channel name -> internal modality index (0 T1, 1 T1ce, 2 T2, 3 FLAIR), or -1.
int modality_of_name(const std::string& name) {
  const std::string k = squash(name);
  if (contains(k, "flair") || k == "t2f") return 3;
  for (const char* x : {"t1ce", "t1c", "t1gd", "t1wgd", "t1wce", "t1post", "t1contrast", "t1gad"})
    if (k.rfind(x, 0) == 0) return 1;
  if (k == "t1" || k == "t1n" || k == "t1w" || k == "t1native" || k == "t1pre") return 0;
  if (k == "t2" || k == "t2w") return 2;
  return -1;
}

// A label or region name -> internal label (0, 1 NCR, 2 ED, 4 ET), or -1.
int internal_label_of_name(const std::string& name) {
  const std::string k = squash(name);
  if (k == "background" || k == "bg") return 0;
  if (contains(k, "edema") || k == "ed" || k == "snfh" || contains(k, "hyperintensity")) return 2;
  if (contains(k, "nonenhancing") || contains(k, "necro") || k == "ncr" || k == "net" ||
      k == "netc" || k == "ncrnet")
    return 1;
  if (contains(k, "enhancing") || k == "et") return 4;
  return -1;
}

// A region name -> 0 whole tumor, 1 tumor core, 2 enhancing tumor, or -1.
int region_of_name(const std::string& name) {
  const std::string k = squash(name);
  if (k == "wt" || contains(k, "whole")) return 0;
  if (k == "tc" || contains(k, "core")) return 1;
  if (k == "et" || (contains(k, "enhancing") && !contains(k, "nonenhancing"))) return 2;
  return -1;
}

// BraTS 2024's resection cavity, by name ("RC", "resection cavity", "surgical cavity").
bool is_cavity_name(const std::string& name) {
  const std::string k = squash(name);
  return k == "rc" || contains(k, "cavity");
}

const char* internal_label_short(int internal) {
  return internal == 1 ? "NCR" : internal == 2 ? "ED" : internal == 4 ? "ET" : "?";
}

// The name an nnU-Net convention is shown with: "nnunet(1=ED,2=NCR,3=ET)".
std::string nnunet_convention_name(const std::array<uint8_t, 256>& lut, int rc = -1) {
  std::string name = "nnunet(";
  for (int v = 1; v < 256; ++v)
    if (v == rc || (lut[v] != kInvalidLabel && lut[v] != 0))
      name += (name.back() == '(' ? "" : ",") + std::to_string(v) + "=" +
              (v == rc ? "RC" : internal_label_short(lut[v]));
  return name + ")";
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot be opened");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("is not valid JSON: ") + e.what());
  }
}

// The label values of a dataset.json's "labels": v2 (name -> value or list of values, the lists
// being nnU-Net's regions) or v1 (value -> name).
LabelConvention labels_of_dataset_json(const nlohmann::json& j, const std::string& path) {
  const auto hint = std::string(
      "name the labels background, edema, necrosis (or non-enhancing tumor) and enhancing "
      "tumor, or the regions whole tumor, tumor core and enhancing tumor");
  if (!j.contains("labels") || !j["labels"].is_object() || j["labels"].empty())
    throw Error(path, "has no \"labels\" object", hint);
  LabelConvention c(Layout::nnunet);
  c.to_internal.fill(kInvalidLabel);
  c.to_internal[0] = 0;
  std::string found;  // the entries as read, for the messages
  std::vector<std::pair<std::string, std::vector<int>>> entries;  // name -> values
  bool regions = false;
  for (auto& [key, value] : j["labels"].items()) {
    std::vector<int> values;
    std::string name = key;
    if (value.is_string()) {  // v1: "1": "edema"
      name = value.get<std::string>();
      try {
        values.push_back(std::stoi(key));
      } catch (const std::exception&) {
        throw Error(path, "label \"" + key + "\" is not a number", hint);
      }
    } else if (value.is_number_integer()) {
      values.push_back(value.get<int>());
    } else if (value.is_array()) {
      regions = true;
      for (const auto& v : value) {
        if (!v.is_number_integer()) throw Error(path, "region \"" + key + "\" lists a non-integer");
        values.push_back(v.get<int>());
      }
    } else {
      throw Error(path, "label \"" + key + "\" is neither a value nor a list of values", hint);
    }
    for (int v : values)
      if (v < 0 || v > 255)
        throw Error(path,
                    "label \"" + name + "\" has value " + std::to_string(v) + " outside 0-255");
    found += (found.empty() ? "" : ", ") + name;
    entries.emplace_back(name, values);
  }
  if (regions) {
    // nnU-Net region-based training: each region lists the values inside it. A value's internal
    // label follows from the regions holding it: all three ET, whole tumor and core NCR, whole
    // tumor alone ED.
    std::array<std::vector<int>, 3> region;
    std::array<bool, 3> named{false, false, false};
    for (const auto& [name, values] : entries) {
      if (values.size() == 1 && values[0] == 0) continue;  // background
      const int r = region_of_name(name);
      if (r < 0 || named[r])
        throw Error(path,
                    "cannot map the region \"" + name +
                        "\" to whole tumor, tumor core or "
                        "enhancing tumor (regions: " +
                        found + ")",
                    hint);
      named[r] = true;
      region[r] = values;
    }
    if (!named[0] || !named[1] || !named[2])
      throw Error(path,
                  "region-based labels need whole tumor, tumor core and enhancing tumor; "
                  "found " +
                      found,
                  hint);
    auto in = [&](int r, int v) {
      return std::find(region[r].begin(), region[r].end(), v) != region[r].end();
    };
    for (int v : region[0]) {
      if (v == 0) continue;
      c.to_internal[v] = in(2, v) ? 4 : in(1, v) ? 1 : 2;
    }
    for (int r : {1, 2})
      for (int v : region[r])
        if (!in(0, v) || (r == 2 && !in(1, v)))
          throw Error(path,
                      "the regions are not nested (enhancing tumor in tumor core in whole "
                      "tumor): value " +
                          std::to_string(v),
                      hint);
  } else {
    std::array<int, 5> value_of{-1, -1, -1, -1, -1};
    for (const auto& [name, values] : entries) {
      if (is_cavity_name(name)) {  // BraTS 2024's resection cavity: not tumour, background
        c.to_internal[values[0]] = 0;
        c.resection_cavity = values[0];
        continue;
      }
      const int internal = internal_label_of_name(name);
      if (internal < 0)
        throw Error(path,
                    "cannot map the label \"" + name +
                        "\" to background, necrosis (NCR), "
                        "edema (ED), enhancing tumor (ET) or resection cavity (RC) (labels: " +
                        found + ")",
                    hint);
      if (internal != 0 && value_of[internal] >= 0)
        throw Error(path,
                    "two labels map to " + std::string(internal_label_short(internal)) +
                        " (labels: " + found + ")",
                    hint);
      value_of[internal] = values[0];
      c.to_internal[values[0]] = static_cast<uint8_t>(internal);
    }
    for (int internal : {1, 2, 4})
      if (value_of[internal] < 0)
        throw Error(path,
                    std::string("no label for ") + internal_label_short(internal) +
                        " (labels: " + found + ")",
                    hint);
  }
  c.name = nnunet_convention_name(c.to_internal, c.resection_cavity);
  return c;
}

// MSD: modality order from dataset.json when present ("modality" or "channel_names"); the Task01
// order when the names cannot all be mapped (with a problem noted).
std::array<int, kNumModalities> msd_frames(const fs::path& root,
                                           std::vector<std::string>& problems) {
  std::array<int, kNumModalities> frames{1, 2, 3, 0};  // T1, T1Gd, T2, FLAIR in FLAIR,T1,T1Gd,T2
  fs::path js = root / "dataset.json";
  std::error_code ec;
  if (!fs::is_regular_file(js, ec)) return frames;
  try {
    nlohmann::json j = read_json_file(js.string());
    const nlohmann::json* mods = j.contains("modality")        ? &j["modality"]
                                 : j.contains("channel_names") ? &j["channel_names"]
                                                               : nullptr;
    if (!mods || !mods->is_object()) return frames;
    std::array<int, kNumModalities> found{-1, -1, -1, -1};
    for (auto& [k, v] : mods->items()) {
      const int m = v.is_string() ? modality_of_name(v.get<std::string>()) : -1;
      if (m >= 0) found[m] = std::stoi(k);
    }
    if (std::find(found.begin(), found.end(), -1) != found.end()) {
      problems.push_back(js.string() +
                         ": cannot map every modality from \"modality\"; assuming "
                         "the Task01 order FLAIR, T1, T1Gd, T2");
      return frames;
    }
    return found;
  } catch (const std::exception& e) {
    problems.push_back(js.string() + ": unreadable (" + e.what() + "); assuming Task01 order");
    return frames;
  }
}

// "<ID>_0003.nii.gz" -> ("<ID>", 3) for nnU-Net's per-channel files; nullopt for other names.
std::optional<std::pair<std::string, int>> nnunet_channel_file(const std::string& name,
                                                               const std::string& ending) {
  if (name.size() <= ending.size() + 5 ||
      name.compare(name.size() - ending.size(), ending.size(), ending) != 0)
    return std::nullopt;
  const std::string stem = name.substr(0, name.size() - ending.size());
  const std::string digits = stem.substr(stem.size() - 4);
  if (stem[stem.size() - 5] != '_' ||
      !std::all_of(digits.begin(), digits.end(), [](char ch) { return std::isdigit(ch); }))
    return std::nullopt;
  return std::make_pair(stem.substr(0, stem.size() - 5), std::stoi(digits));
}

// Whether a dataset folder holds nnU-Net's per-channel image files.
bool has_nnunet_images(const fs::path& root) {
  for (const char* sub : {"imagesTr", "imagesTs"})
    for (const auto& p : sorted_entries(root / sub)) {
      const std::string name = p.filename().string();
      if (nnunet_channel_file(name, ".nii.gz") || nnunet_channel_file(name, ".nii")) return true;
    }
  return false;
}

void discover_nnunet(const fs::path& root, Dataset& ds) {
  const fs::path js = root / "dataset.json";
  std::error_code ec;
  if (!fs::is_regular_file(js, ec))
    throw Error(root.string(), "holds nnU-Net image files (<ID>_0000.nii.gz) but no dataset.json",
                "the channel order comes from dataset.json's channel_names; add it");
  const NnunetMeta meta = nnunet_dataset_json(js.string());
  ds.layout = Layout::nnunet;
  ds.labels = meta.labels;
  for (auto [images, labels] :
       {std::pair<const char*, const char*>{"imagesTr", "labelsTr"}, {"imagesTs", "labelsTs"}}) {
    std::map<std::string, std::map<int, std::string>> files;  // id -> channel -> path
    for (const auto& p : sorted_entries(root / images)) {
      const std::string name = p.filename().string();
      if (!is_nifti_name(name)) continue;
      if (auto f = nnunet_channel_file(name, meta.file_ending))
        files[f->first][f->second] = p.string();
      else
        ds.problems.push_back(p.string() + ": not named <ID>_<4-digit channel>" + meta.file_ending +
                              " (nnU-Net layout); left out");
    }
    for (const auto& [id, channels] : files) {
      CaseFiles c;
      c.id = id;
      c.held_out = std::string(images) == "imagesTs";
      for (int m = 0; m < kNumModalities; ++m) {
        auto it = channels.find(meta.channel[m]);
        if (it != channels.end()) {
          c.image[m] = it->second;
        } else {
          char suffix[16];
          std::snprintf(suffix, sizeof suffix, "_%04d", meta.channel[m]);
          ds.problems.push_back((root / images / (id + suffix + meta.file_ending)).string() +
                                ": missing modality " + kModalityNames[m]);
        }
      }
      c.seg = find_nifti(root / labels, id);
      if (c.seg.empty() && std::string(images) == "imagesTr")
        ds.problems.push_back((root / images).string() + "/" + id + ": no label map " + labels +
                              "/" + id + meta.file_ending);
      ds.cases.push_back(std::move(c));
    }
  }
}

}  // namespace

std::string nifti_stem(const std::string& name) {
  if (name.size() > 7 && name.compare(name.size() - 7, 7, ".nii.gz") == 0)
    return name.substr(0, name.size() - 7);
  if (name.size() > 4 && name.compare(name.size() - 4, 4, ".nii") == 0)
    return name.substr(0, name.size() - 4);
  return name;
}

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::brats2021:
      return "brats2021";
    case Layout::brats2023:
      return "brats2023";
    case Layout::brats2024:
      return "brats2024";
    case Layout::msd:
      return "msd";
    case Layout::nnunet:
      return "nnunet";
  }
  return "?";
}

Layout parse_layout(const std::string& name, const std::string& flag) {
  if (name == "brats2021" || name == "brats") return Layout::brats2021;
  if (name == "brats2023") return Layout::brats2023;
  if (name == "brats2024") return Layout::brats2024;
  if (name == "msd") return Layout::msd;
  if (name == "nnunet") return Layout::nnunet;
  throw Error(flag, "unknown label convention \"" + name + "\"",
              "use brats2021, brats2023, brats2024, msd or nnunet");
}

LabelConvention::LabelConvention(Layout layout) : name(layout_name(layout)) {
  auto& lut = to_internal;
  lut.fill(kInvalidLabel);
  lut[0] = 0;
  switch (layout) {
    case Layout::brats2021:
      lut[1] = 1, lut[2] = 2, lut[4] = 4;
      break;
    case Layout::brats2023:
    case Layout::brats2024:  // 1 NETC, 2 SNFH, 3 ET, 4 RC (background: not tumour)
      lut[1] = 1, lut[2] = 2, lut[3] = 4, lut[4] = 0;
      resection_cavity = 4;
      break;
    case Layout::msd:
    case Layout::nnunet:  // nnU-Net's BraTS conversion writes MSD's values
      lut[1] = 2, lut[2] = 1, lut[3] = 4;
      break;
  }
  if (layout == Layout::nnunet) name = nnunet_convention_name(lut);
}

std::array<uint8_t, 256> label_lut_to_internal(const LabelConvention& c) {
  return c.to_internal;
}

NnunetMeta nnunet_dataset_json(const std::string& path, bool need_channels) {
  const nlohmann::json j = read_json_file(path);
  NnunetMeta meta;
  meta.labels = labels_of_dataset_json(j, path);
  meta.file_ending = j.value("file_ending", std::string(".nii.gz"));
  if (meta.file_ending != ".nii.gz" && meta.file_ending != ".nii")
    throw Error(path, "file_ending \"" + meta.file_ending + "\": kdseg reads NIfTI only",
                "convert the images to .nii.gz");
  if (!need_channels) return meta;
  const char* key = j.contains("channel_names") ? "channel_names" : "modality";
  if (!j.contains(key) || !j[key].is_object())
    throw Error(path, "has no \"channel_names\" object", "nnU-Net v2 datasets list their channels");
  std::string found;
  for (auto& [k, v] : j[key].items()) {
    const std::string name = v.is_string() ? v.get<std::string>() : v.dump();
    found += (found.empty() ? "" : ", ") + k + ": " + name;
    const int m = modality_of_name(name);
    int index = -1;
    try {
      index = std::stoi(k);
    } catch (const std::exception&) {
      throw Error(path, std::string(key) + " key \"" + k + "\" is not a channel number");
    }
    if (m < 0) continue;  // another channel (e.g. a brain mask): not read
    if (meta.channel[m] >= 0)
      throw Error(path, std::string("two channels are ") + kModalityNames[m] + " (" + found + ")",
                  "give each of T1, T1ce, T2 and FLAIR one channel");
    meta.channel[m] = index;
  }
  std::string missing;
  for (int m = 0; m < kNumModalities; ++m)
    if (meta.channel[m] < 0)
      missing += (missing.empty() ? "" : ", ") + std::string(kModalityNames[m]);
  if (!missing.empty())
    throw Error(
        path,
        "cannot map " + std::string(key) + " {" + found + "} to T1, T1ce, T2 and FLAIR: no " +
            missing,
        "name the channels T1, T1ce, T2 and FLAIR (T1n/T1w, T1c/T1Gd, T2w, T2f are read too)");
  return meta;
}

std::array<uint8_t, 256> label_lut_from_internal(const LabelConvention& c) {
  std::array<uint8_t, 256> to = label_lut_to_internal(c), from;
  from.fill(kInvalidLabel);
  for (int v = 0; v < 256; ++v)
    if (to[v] != kInvalidLabel && from[to[v]] == kInvalidLabel)
      from[to[v]] = static_cast<uint8_t>(v);
  return from;
}

std::vector<int> allowed_labels(const LabelConvention& c) {
  std::vector<int> out;
  auto lut = label_lut_to_internal(c);
  for (int v = 0; v < 256; ++v)
    if (lut[v] != kInvalidLabel) out.push_back(v);
  return out;
}

Dataset discover_dataset(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(dir, "no such folder");
  if (!fs::is_directory(dir, ec))
    throw Error(dir, "is a file, not a folder", "pass the folder that holds the cases");
  Dataset ds;
  ds.root = dir;
  const fs::path root(dir);
  const bool images_folders =
      fs::is_directory(root / "imagesTr", ec) || fs::is_directory(root / "imagesTs", ec);
  if (images_folders && has_nnunet_images(root)) {
    // nnU-Net raw: one file per channel, the order and labels in dataset.json.
    discover_nnunet(root, ds);
  } else if (images_folders) {
    // MSD Task01: imagesTr/ (labelled through labelsTr/) and imagesTs/ (unlabelled).
    ds.layout = Layout::msd;
    const auto frames = msd_frames(root, ds.problems);
    for (const char* sub : {"imagesTr", "imagesTs"}) {
      for (const auto& p : sorted_entries(root / sub)) {
        const std::string name = p.filename().string();
        if (!is_nifti_name(name)) continue;
        CaseFiles c;
        c.id = nifti_stem(name);
        c.image.fill(p.string());
        c.frame = frames;
        c.held_out = std::string(sub) == "imagesTs";
        if (std::string(sub) == "imagesTr") {
          c.seg = find_nifti(root / "labelsTr", c.id);
          if (c.seg.empty())
            ds.problems.push_back(p.string() + ": no label map labelsTr/" + c.id + ".nii.gz");
        }
        ds.cases.push_back(std::move(c));
      }
    }
  } else if (auto single = brats_layout_of(root)) {
    // A single BraTS case folder.
    ds.layout = *single;
    ds.cases.push_back(brats_case(root, *single, ds.problems));
  } else {
    int n2021 = 0, n2023 = 0;
    std::vector<std::pair<fs::path, Layout>> found;
    for (const auto& p : sorted_entries(root)) {
      if (!fs::is_directory(p, ec)) continue;
      auto l = brats_layout_of(p);
      if (!l) {
        // A folder that looks like a case but holds none of the expected names.
        bool has_nifti = false;
        for (const auto& q : sorted_entries(p)) has_nifti |= is_nifti_name(q.filename().string());
        if (has_nifti)
          ds.problems.push_back(p.string() + ": NIfTI files present but none named " +
                                p.filename().string() + "_{t1,t1ce,t2,flair}.nii.gz or " +
                                p.filename().string() + "-{t1n,t1c,t2w,t2f}.nii.gz");
        continue;
      }
      (*l == Layout::brats2023 ? n2023 : n2021)++;
      found.emplace_back(p, *l);
    }
    if (n2021 && n2023)
      throw Error(dir,
                  "mixes BraTS 2018-2021 (" + std::to_string(n2021) + " cases) and BraTS 2023 (" +
                      std::to_string(n2023) + " cases) file names",
                  "their label conventions differ (ET = 4 vs 3): keep them in separate folders");
    ds.layout = n2023 ? Layout::brats2023 : Layout::brats2021;
    for (auto& [p, l] : found) ds.cases.push_back(brats_case(p, l, ds.problems));
  }
  if (ds.cases.empty()) {
    std::string why = "holds no cases";
    if (!ds.problems.empty()) why += " (" + ds.problems.front() + ")";
    throw Error(dir, why,
                "expected BraTS case folders <ID>/<ID>_t1.nii.gz ... (2018-2021), "
                "<ID>/<ID>-t1n.nii.gz ... (2023, 2024), an MSD Task01 folder with imagesTr/, or an "
                "nnU-Net dataset (imagesTr/<ID>_0000.nii.gz ... and dataset.json)");
  }
  if (ds.layout != Layout::nnunet) ds.labels = LabelConvention(ds.layout);
  std::sort(ds.cases.begin(), ds.cases.end(),
            [](const CaseFiles& a, const CaseFiles& b) { return a.id < b.id; });
  return ds;
}

void labels_to_convention(LabelMap& labels, const LabelConvention& c) {
  const auto lut = label_lut_from_internal(c);
  for (auto& v : labels.data) v = lut[v];
}

LabelMap load_label_map(const std::string& path, const LabelConvention& c,
                        int64_t* n_resection_cavity) {
  LabelMap lm = read_labels(path);
  const auto lut = label_lut_to_internal(c);
  std::array<int64_t, 256> count{};
  for (uint8_t v : lm.data) ++count[v];
  if (n_resection_cavity)
    *n_resection_cavity = c.resection_cavity >= 0 ? count[c.resection_cavity] : 0;
  std::string bad;
  for (int v = 0; v < 256; ++v)
    if (count[v] && lut[v] == kInvalidLabel)
      bad += (bad.empty() ? "" : ", ") + std::to_string(v) + " (" + std::to_string(count[v]) +
             " voxels)";
  if (!bad.empty()) {
    std::string allowed;
    for (int v : allowed_labels(c)) allowed += (allowed.empty() ? "" : ",") + std::to_string(v);
    throw Error(path,
                "label values outside the " + c.name + " convention {" + allowed + "}: " + bad,
                "check that the file is a tumour segmentation of this layout (BraTS 2023 uses "
                "ET = 3 and BraTS 2024 adds 4 = resection cavity, BraTS 2018-2021 ET = 4)");
  }
  for (auto& v : lm.data) v = lut[v];
  if (lm.n_channels != 1)
    throw Error(path,
                "label map has " + std::to_string(lm.n_channels) + " frames; expected a 3D volume");
  return lm;
}

CaseData load_case(const CaseFiles& files, const LabelConvention& labels, int threads) {
  CaseData out;
  out.id = files.id;
  for (int m = 0; m < kNumModalities; ++m)
    if (files.image[m].empty())
      throw Error(files.id, std::string("missing modality ") + kModalityNames[m],
                  "every case needs T1, T1ce, T2 and FLAIR");
  const bool four_d = files.frame[0] >= 0;
  // Read every file (in parallel when asked), keeping the first error of each. A modality's voxels
  // go straight into its channel of the case's image as soon as it is read (the image is made from
  // the first file read; no whole copy per modality); the checks below then compare the files'
  // geometries in modality order. An MSD case is one 4D file, read whole.
  const int n_files = four_d ? 1 : kNumModalities;
  std::vector<Volume> frames(n_files);  // each file's geometry, without voxels
  Volume whole;                         // the 4D file
  std::optional<LabelMap> seg;
  std::vector<std::string> errors(n_files + 1);
  std::mutex mutex;
  parallel_for(n_files + 1, std::max(1, threads), [&](int64_t i) {
    try {
      if (i == n_files) {
        if (!files.seg.empty()) seg = load_label_map(files.seg, labels);
      } else if (four_d) {
        whole = read_volume(files.image[0]);
      } else {
        NiftiFile f = read_nifti_file(files.image[i]);
        Volume frame = volume_frame(f.header);
        float* channel = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (frame.n_channels == 1 && out.image.data.empty())
            out.image = like<float>(frame, kNumModalities);
          if (frame.n_channels == 1 && frame.dim == out.image.dim)
            channel = out.image.channel(static_cast<int>(i));
        }
        if (channel) convert_voxels(f, frame, channel, false, files.image[i]);
        frames[i] = std::move(frame);
      }
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  });
  for (const auto& e : errors)
    if (!e.empty()) throw Error("", e);
  if (four_d) {
    // One 4D file holding every modality (MSD).
    int need = *std::max_element(files.frame.begin(), files.frame.end()) + 1;
    if (whole.n_channels < need)
      throw Error(files.image[0], "has " + std::to_string(whole.n_channels) +
                                      " frame(s); expected " + std::to_string(need) +
                                      " modalities in a 4D image");
    out.image = like<float>(whole, kNumModalities);
    for (int m = 0; m < kNumModalities; ++m)
      std::copy(whole.channel(files.frame[m]), whole.channel(files.frame[m]) + whole.n_voxels(),
                out.image.channel(m));
  } else {
    for (int m = 0; m < kNumModalities; ++m) {
      const Volume& v = frames[m];
      if (v.n_channels != 1)
        throw Error(files.image[m], "has " + std::to_string(v.n_channels) +
                                        " frames; expected one 3D volume per modality");
      if (m == 0) continue;
      if (v.dim != frames[0].dim)
        throw Error(files.image[m],
                    "shape " + shape_text(v.dim) + " differs from " + kModalityNames[0] + "'s " +
                        shape_text(frames[0].dim),
                    "the modalities of a case must be co-registered on one grid");
      if (!same_grid(v, frames[0], 1e-2))
        throw Error(files.image[m],
                    std::string("geometry (affine) differs from ") + kModalityNames[0] + "'s",
                    "the modalities of a case must be co-registered on one grid");
    }
    // The case's geometry is T1's, whichever file was read first.
    out.image.spacing = frames[0].spacing;
    out.image.source = frames[0].source;
    out.image.to_canonical = frames[0].to_canonical;
  }
  if (seg) {
    if (seg->dim != out.image.dim || !same_grid(*seg, out.image, 1e-2))
      throw Error(files.seg, "label map is not on the grid of the case's images",
                  "the segmentation must have the images' shape and affine");
    out.labels = std::move(seg);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> discover_label_maps(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir, "no such folder");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : sorted_entries(dir)) {
    const std::string name = p.filename().string();
    if (fs::is_regular_file(p, ec) && is_nifti_name(name)) {
      std::string id = nifti_stem(name);
      // Skip probability maps written beside the labels.
      if (id.size() > 5 && id.compare(id.size() - 5, 5, "_prob") == 0) continue;
      out.emplace_back(id, p.string());
    } else if (fs::is_directory(p, ec)) {
      for (const std::string& stem : {name, name + "_seg", name + "-seg"}) {
        std::string f = find_nifti(p, stem);
        if (!f.empty()) {
          out.emplace_back(name, f);
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace kdseg
