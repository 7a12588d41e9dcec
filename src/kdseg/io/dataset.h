#pragma once
// Dataset layouts (docs/design.md §1): finding the cases of a folder and loading one case
// into kdseg's internal conventions — channels T1, T1ce, T2, FLAIR; labels {0, 1 NCR, 2 ED,
// 4 ET} — and back.
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "kdseg/io/image.h"

namespace kdseg {

enum class Layout {
  brats2021,  // <ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz (+ <ID>_seg.nii.gz), labels {0,1,2,4}
  brats2023,  // <ID>/<ID>-{t1n,t1c,t2w,t2f}.nii.gz (+ <ID>-seg.nii.gz), labels {0,1,2,3}, and
              // 4 read as BraTS 2024's resection cavity where a case has it (below)
  brats2024,  // not a layout of its own: BraTS 2024 adult glioma (post-treatment) uses the 2023
              // names with labels {0, 1 NETC, 2 SNFH, 3 ET, 4 RC}; a label convention to name
              // (--labels brats2024); discovery reports such a folder as brats2023
  msd,  // imagesTr/<ID>.nii.gz 4D (FLAIR,T1,T1Gd,T2), labelsTr/<ID>.nii.gz, labels {0,1 ED,2 NCR,3
        // ET}
  nnunet,  // nnU-Net raw: {imagesTr,imagesTs}/<ID>_000{0..3}.nii.gz, labelsTr/<ID>.nii.gz and
           // dataset.json, whose channel_names and labels say the order and the label values
};

const char* layout_name(Layout layout);
// A NIfTI file name without its .nii.gz or .nii ("BraTS_001_seg.nii.gz" -> "BraTS_001_seg");
// other names unchanged.
std::string nifti_stem(const std::string& name);
// "brats2021" | "brats2023" | "brats2024" | "msd" | "nnunet" -> Layout; throws kdseg::Error
// naming `flag`.
Layout parse_layout(const std::string& name, const std::string& flag);

constexpr int kNumModalities = 4;
extern const std::array<const char*, kNumModalities> kModalityNames;  // t1, t1ce, t2, flair
constexpr uint8_t kInvalidLabel = 255;

// How the label values of a dataset's files map to kdseg's internal {0, 1 NCR, 2 ED, 4 ET}. The
// fixed conventions come from a Layout (internal == brats2021; Layout::nnunet gives the values
// nnU-Net's own BraTS conversion writes: 1 ED, 2 NCR, 3 ET); an nnU-Net dataset's own comes from
// its dataset.json (nnunet_dataset_json).
//
// BraTS 2024's resection cavity (RC, value 4 beside 1 NETC, 2 SNFH, 3 ET) is not tumour: the 2024
// challenge scores TC = ET + NETC and WT = ET + NETC + SNFH. kdseg reads RC as background, so
// training learns to leave cavities out of all three regions (a prediction of tumour inside a
// cavity is a false positive in the challenge's scoring, so the loss should say so; ignoring RC
// voxels in the loss would leave the network free to call a cavity tumour), and a prediction
// never holds RC. The brats2023 convention reads RC too, where a case has it: BraTS 2023 data
// never holds 4, and BraTS 2024 data has the 2023 file names.
struct LabelConvention {
  LabelConvention(Layout layout = Layout::brats2021);  // NOLINT(google-explicit-constructor)
  std::string name;                      // e.g. "brats2021", "nnunet(1=ED,2=NCR,3=ET)"
  std::array<uint8_t, 256> to_internal;  // file value -> internal (kInvalidLabel: not a label)
  int resection_cavity = -1;             // file value of RC (read as background), e.g. 4; -1 none
};

// file label -> internal label (kInvalidLabel where the convention has no such label)
std::array<uint8_t, 256> label_lut_to_internal(const LabelConvention& c);
// internal label -> file label (kInvalidLabel where undefined; the lowest file value where several
// map to one internal label, so background is written 0, never RC)
std::array<uint8_t, 256> label_lut_from_internal(const LabelConvention& c);
// The file labels a convention allows, e.g. {0,1,2,4}.
std::vector<int> allowed_labels(const LabelConvention& c);

// What an nnU-Net dataset.json says (v2: channel_names, labels as name -> value or region list;
// v1: modality, labels as value -> name).
struct NnunetMeta {
  std::array<int, kNumModalities> channel{-1, -1, -1, -1};  // channel index of T1, T1ce, T2, FLAIR
  LabelConvention labels{Layout::nnunet};
  std::string file_ending = ".nii.gz";
};
// Reads `path`. Channels are matched by name (T1/T1n/T1w, T1ce/T1c/T1Gd, T2/T2w, FLAIR/T2f, any
// case); labels by name (edema/ED/SNFH, necrosis/NCR/non-enhancing, enhancing/ET) or, for
// region-based datasets, by the regions whole tumor, tumor core and enhancing tumor. Throws
// kdseg::Error naming the file and what cannot be mapped. `need_channels` = false reads only the
// labels (for a folder of reference label maps).
NnunetMeta nnunet_dataset_json(const std::string& path, bool need_channels = true);

struct CaseFiles {
  std::string id;                                         // e.g. "BraTS2021_00000"
  std::array<std::string, kNumModalities> image;          // T1, T1ce, T2, FLAIR paths; "" = missing
  std::array<int, kNumModalities> frame{-1, -1, -1, -1};  // 4D files (MSD): frame of each modality
  std::string seg;                                        // "" = unlabelled
  bool held_out = false;  // in imagesTs/ of an MSD or nnU-Net dataset: its test set, which
                          // training leaves out (as nnU-Net does) even when labelsTs/ has labels
};

struct Dataset {
  std::string root;
  Layout layout = Layout::brats2021;
  LabelConvention labels;             // of the label maps (the layout's, or dataset.json's)
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
CaseData load_case(const CaseFiles& files, const LabelConvention& labels, int threads = 1);
// Loads a label map and converts it to the internal convention (errors name the file and value).
// `n_resection_cavity`, when given, receives the number of voxels read as RC (background).
LabelMap load_label_map(const std::string& path, const LabelConvention& labels,
                        int64_t* n_resection_cavity = nullptr);
// Converts an internal label map to convention `c` in place.
void labels_to_convention(LabelMap& labels, const LabelConvention& c);

// Prediction folders: flat <ID>.nii.gz files (the BraTS submission format) or case folders
// holding <ID>.nii.gz, <ID>_seg.nii.gz or <ID>-seg.nii.gz. Returns (id, path) sorted by id.
std::vector<std::pair<std::string, std::string>> discover_label_maps(const std::string& dir);

}  // namespace kdseg
