#pragma once
// Dataset layouts (DESIGN §1): finding the cases of a folder and loading one case into kdseg's
// internal conventions — channels T1, T1ce, T2, FLAIR; labels {0, 1 NCR, 2 ED, 4 ET} — and back.
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "kdseg/io/image.h"

namespace kdseg {

enum class Layout {
  brats2021,  // <ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz (+ <ID>_seg.nii.gz), labels {0,1,2,4}
  brats2023,  // <ID>/<ID>-{t1n,t1c,t2w,t2f}.nii.gz (+ <ID>-seg.nii.gz), labels {0,1,2,3}
  msd,  // imagesTr/<ID>.nii.gz 4D (FLAIR,T1,T1Gd,T2), labelsTr/<ID>.nii.gz, labels {0,1 ED,2 NCR,3
        // ET}
};
// Label conventions follow the layouts: internal == brats2021.
using LabelConvention = Layout;

const char* layout_name(Layout layout);
// "brats2021" | "brats2023" | "msd" -> Layout; throws kdseg::Error naming `flag`.
Layout parse_layout(const std::string& name, const std::string& flag);

constexpr int kNumModalities = 4;
extern const std::array<const char*, kNumModalities> kModalityNames;  // t1, t1ce, t2, flair
constexpr uint8_t kInvalidLabel = 255;

// file label -> internal label (kInvalidLabel where the convention has no such label)
std::array<uint8_t, 256> label_lut_to_internal(LabelConvention c);
// internal label -> file label (kInvalidLabel where undefined)
std::array<uint8_t, 256> label_lut_from_internal(LabelConvention c);
// The file labels a convention allows, e.g. {0,1,2,4}.
std::vector<int> allowed_labels(LabelConvention c);

struct CaseFiles {
  std::string id;                                         // e.g. "BraTS2021_00000"
  std::array<std::string, kNumModalities> image;          // T1, T1ce, T2, FLAIR paths; "" = missing
  std::array<int, kNumModalities> frame{-1, -1, -1, -1};  // 4D files (MSD): frame of each modality
  std::string seg;                                        // "" = unlabelled
};

struct Dataset {
  std::string root;
  Layout layout = Layout::brats2021;
  std::vector<CaseFiles> cases;       // sorted by id
  std::vector<std::string> problems;  // found while discovering (e.g. a missing modality)
};

// Finds the layout and the cases of `dir` (a dataset folder or a single case folder). Throws
// kdseg::Error when `dir` does not exist, holds no case, or mixes layouts.
Dataset discover_dataset(const std::string& dir);

struct CaseData {
  std::string id;
  Volume image;                    // 4 channels T1, T1ce, T2, FLAIR; canonical orientation
  std::optional<LabelMap> labels;  // internal convention {0,1,2,4}
};

// Loads a case and checks it: every modality present, finite, on one grid; the label map on the
// same grid with values of the convention. Throws kdseg::Error naming the offending file.
// `threads` > 1 reads the files in parallel (for callers that load one case at a time).
CaseData load_case(const CaseFiles& files, LabelConvention labels, int threads = 1);
// Loads a label map and converts it to the internal convention (errors name the file and value).
LabelMap load_label_map(const std::string& path, LabelConvention labels);
// Converts an internal label map to convention `c` in place.
void labels_to_convention(LabelMap& labels, LabelConvention c);

// Prediction folders: flat <ID>.nii.gz files (the BraTS submission format) or case folders
// holding <ID>.nii.gz, <ID>_seg.nii.gz or <ID>-seg.nii.gz. Returns (id, path) sorted by id.
std::vector<std::pair<std::string, std::string>> discover_label_maps(const std::string& dir);

}  // namespace kdseg
