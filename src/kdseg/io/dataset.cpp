#include "kdseg/io/dataset.h"

#include <algorithm>
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

std::string strip_nifti(const std::string& name) {
  if (name.size() > 7 && name.compare(name.size() - 7, 7, ".nii.gz") == 0)
    return name.substr(0, name.size() - 7);
  if (name.size() > 4 && name.compare(name.size() - 4, 4, ".nii") == 0)
    return name.substr(0, name.size() - 4);
  return name;
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

// MSD: modality order from dataset.json when present ("modality" or "channel_names").
std::array<int, kNumModalities> msd_frames(const fs::path& root,
                                           std::vector<std::string>& problems) {
  std::array<int, kNumModalities> frames{1, 2, 3, 0};  // T1, T1Gd, T2, FLAIR in FLAIR,T1,T1Gd,T2
  fs::path js = root / "dataset.json";
  std::error_code ec;
  if (!fs::is_regular_file(js, ec)) return frames;
  try {
    std::ifstream in(js);
    nlohmann::json j = nlohmann::json::parse(in);
    const nlohmann::json* mods = j.contains("modality")        ? &j["modality"]
                                 : j.contains("channel_names") ? &j["channel_names"]
                                                               : nullptr;
    if (!mods || !mods->is_object()) return frames;
    std::array<int, kNumModalities> found{-1, -1, -1, -1};
    for (auto& [k, v] : mods->items()) {
      std::string name = v.get<std::string>();
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      int idx = std::stoi(k);
      if (name == "flair" || name == "t2f")
        found[3] = idx;
      else if (name == "t1gd" || name == "t1ce" || name == "t1c" || name == "t1w+gd")
        found[1] = idx;
      else if (name == "t2" || name == "t2w")
        found[2] = idx;
      else if (name == "t1" || name == "t1w" || name == "t1n")
        found[0] = idx;
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

}  // namespace

const char* layout_name(Layout layout) {
  switch (layout) {
    case Layout::brats2021:
      return "brats2021";
    case Layout::brats2023:
      return "brats2023";
    case Layout::msd:
      return "msd";
  }
  return "?";
}

Layout parse_layout(const std::string& name, const std::string& flag) {
  if (name == "brats2021" || name == "brats") return Layout::brats2021;
  if (name == "brats2023") return Layout::brats2023;
  if (name == "msd") return Layout::msd;
  throw Error(flag, "unknown label convention \"" + name + "\"", "use brats2021, brats2023 or msd");
}

std::array<uint8_t, 256> label_lut_to_internal(LabelConvention c) {
  std::array<uint8_t, 256> lut;
  lut.fill(kInvalidLabel);
  lut[0] = 0;
  switch (c) {
    case Layout::brats2021:
      lut[1] = 1, lut[2] = 2, lut[4] = 4;
      break;
    case Layout::brats2023:
      lut[1] = 1, lut[2] = 2, lut[3] = 4;
      break;
    case Layout::msd:
      lut[1] = 2, lut[2] = 1, lut[3] = 4;
      break;
  }
  return lut;
}

std::array<uint8_t, 256> label_lut_from_internal(LabelConvention c) {
  std::array<uint8_t, 256> to = label_lut_to_internal(c), from;
  from.fill(kInvalidLabel);
  for (int v = 0; v < 256; ++v)
    if (to[v] != kInvalidLabel) from[to[v]] = static_cast<uint8_t>(v);
  return from;
}

std::vector<int> allowed_labels(LabelConvention c) {
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
  // MSD Task01: imagesTr/ (labelled through labelsTr/) and imagesTs/ (unlabelled).
  if (fs::is_directory(root / "imagesTr", ec) || fs::is_directory(root / "imagesTs", ec)) {
    ds.layout = Layout::msd;
    const auto frames = msd_frames(root, ds.problems);
    for (const char* sub : {"imagesTr", "imagesTs"}) {
      for (const auto& p : sorted_entries(root / sub)) {
        const std::string name = p.filename().string();
        if (!is_nifti_name(name)) continue;
        CaseFiles c;
        c.id = strip_nifti(name);
        if (c.id.size() > 5 && c.id.compare(c.id.size() - 5, 5, "_0000") == 0) {
          ds.problems.push_back(p.string() +
                                ": one file per modality (nnU-Net style) is not the "
                                "MSD layout; only 4D images are read");
          continue;
        }
        c.image.fill(p.string());
        c.frame = frames;
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
                "<ID>/<ID>-t1n.nii.gz ... (2023), or an MSD Task01 folder with imagesTr/");
  }
  std::sort(ds.cases.begin(), ds.cases.end(),
            [](const CaseFiles& a, const CaseFiles& b) { return a.id < b.id; });
  return ds;
}

void labels_to_convention(LabelMap& labels, LabelConvention c) {
  const auto lut = label_lut_from_internal(c);
  for (auto& v : labels.data) v = lut[v];
}

LabelMap load_label_map(const std::string& path, LabelConvention c) {
  LabelMap lm = read_labels(path);
  const auto lut = label_lut_to_internal(c);
  std::array<int64_t, 256> count{};
  for (uint8_t v : lm.data) ++count[v];
  std::string bad;
  for (int v = 0; v < 256; ++v)
    if (count[v] && lut[v] == kInvalidLabel)
      bad += (bad.empty() ? "" : ", ") + std::to_string(v) + " (" + std::to_string(count[v]) +
             " voxels)";
  if (!bad.empty()) {
    std::string allowed;
    for (int v : allowed_labels(c)) allowed += (allowed.empty() ? "" : ",") + std::to_string(v);
    throw Error(path,
                std::string("label values outside the ") + layout_name(c) + " convention {" +
                    allowed + "}: " + bad,
                "check that the file is a tumour segmentation of this layout (BraTS 2023 uses "
                "ET = 3, BraTS 2018-2021 ET = 4)");
  }
  for (auto& v : lm.data) v = lut[v];
  if (lm.n_channels != 1)
    throw Error(path,
                "label map has " + std::to_string(lm.n_channels) + " frames; expected a 3D volume");
  return lm;
}

CaseData load_case(const CaseFiles& files, LabelConvention labels, int threads) {
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
      std::string id = strip_nifti(name);
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
