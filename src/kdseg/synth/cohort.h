#pragma once
// `kdseg synth`: writes a synthetic cohort in the BraTS 2018-2021 layout (docs/design.md §2, §6).
//
//   OUT/labeled/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz     IDs SYN_L0001, SYN_L0002, ...
//   OUT/unlabeled/<ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz       IDs SYN_U0001, ...
//   OUT/hidden/<ID>/<ID>_seg.nii.gz                         true labels of the unlabeled cases
//   OUT/test/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii.gz        IDs SYN_T0001, ...
//   OUT/cohort.json                                         generator version, options, every
//                                                           case's parameters and volumes, and
//                                                           each split's tumour kinds
// The labelled split is stratified by tumour kind (enhancing, non-enhancing, multifocal): with
// only a handful of labelled cases, chance would often leave a kind out (P = 0.8^4 = 41 % that 4
// drawn cases hold no non-enhancing tumour) that the unlabelled and test cases hold, and nothing
// learnt from the labelled cases could segment it. The unlabelled and test splits keep the
// generator's proportions.
// Images are int16 (white matter ~1000 x a per-case gain, background exactly 0, brain >= 1),
// labels uint8 {0, 1, 2, 4}, stored like BraTS files: LPS voxel order, diag(-s, -s, s) affine.
// Each case's random numbers derive from (seed, split, index): the same seed gives the same
// bytes whatever --threads is, and case SYN_T0003 is the same whatever --labeled is.
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg::synth {

struct SynthOptions {
  std::string out;               // cohort folder, e.g. "cohort"
  int n_labeled = 20;            // cases with labels, e.g. 20
  int n_unlabeled = 40;          // cases whose labels go to hidden/, e.g. 40
  int n_test = 20;               // held-out labelled cases, e.g. 20
  bool stratify_labeled = true;  // the labelled cases' tumour kinds chosen so that every kind
                                 // appears (stratified_kinds); false: drawn like the others
  int spacing_mm = 1;            // 1 (BraTS 240x240x155), 2 (120x120x78) or 3 (80x80x52)
  uint64_t seed = 2019;          // e.g. 7
  int threads = 0;               // 0 = all cores
  std::string templates = "/usr/share/mricron/templates";  // Colin27 (Debian mricron-data)
  int compression = 4;                                     // gzip level of the .nii.gz files, 1..12
  bool quiet = false;                                      // no per-case progress
};

struct SynthReport {
  int n_written = 0;
  std::vector<std::string> failures;  // "ID: message"
  double seconds = 0;
};

struct TissueTemplate;

// Generates and writes the cohort; a case that fails is reported and skipped.
SynthReport write_cohort(const SynthOptions& opt);
// The same with the 1 mm template already loaded (load_colin27 takes ~3 s: tests share one).
SynthReport write_cohort(const SynthOptions& opt, const TissueTemplate& template_1mm);

// The case IDs of a split, e.g. case_id("test", 2) = "SYN_T0003".
std::string case_id(const std::string& split, int64_t index);

}  // namespace kdseg::synth
