#pragma once
// One synthetic case: a warped Colin27 brain with a grown glioma, imaged in the four BraTS
// modalities, with its label map. Pure computation (no files): the cohort writer saves it.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kdseg/io/image.h"
#include "kdseg/synth/anatomy.h"
#include "kdseg/synth/field.h"

namespace kdseg::synth {

// The generator's version, recorded in cohort.json: bump it whenever the same seed would give
// different bytes.
constexpr const char* kGeneratorVersion = "kdseg-synth-2";

// The anatomy a cohort shares, prepared once: the template at the output spacing (what voxels
// are made of) and at the growth spacing (what the tumour grows on: max(spacing, 2) mm, fine
// enough for a front several mm wide, 8x cheaper than 1 mm).
struct CohortAnatomy {
  int spacing_mm = 1;         // output grid, e.g. 1 (BraTS), 2 or 3
  int growth_spacing_mm = 2;  // e.g. 2
  TissueTemplate output;
  TissueTemplate growth;
};
CohortAnatomy prepare_anatomy(const TissueTemplate& template_1mm, int spacing_mm);

// The output grid in canonical RAS+ mm: the BraTS 240x240x155 field of view at `spacing_mm`
// (e.g. 80x80x52 at 3 mm). At 1 mm its voxels sit where BraTS files put them.
Grid brats_grid(int spacing_mm);
// The voxel-to-world matrix of that grid as stored in BraTS files: LPS voxel order,
// diag(-s, -s, s), e.g. at 1 mm srow_x = (-1 0 0 0), srow_y = (0 -1 0 239), srow_z = (0 0 1 0).
Mat44 brats_file_affine(int spacing_mm);
// Gives `img` (canonical, on brats_grid(spacing_mm)) a header that writes it the BraTS way.
template <class T>
void set_brats_geometry(Image<T>& img, int spacing_mm, int32_t datatype);

struct CaseSpec {
  std::string id;     // e.g. "SYN_L0007"
  std::string split;  // "labeled", "unlabeled", "test"
  int64_t index = 0;  // index within the split
  uint64_t seed = 0;  // case_seed(cohort seed, split, index)
  std::string kind;   // "" = drawn as in BraTS (P(enhancing) 0.8, P(multifocal) 0.15), or
                      // forced: "enhancing" (unifocal), "non-enhancing" (unifocal), "multifocal"
                      // (enhancing); see tumour_kind
};

// The kinds a tumour can be, in this order: what stratified splits balance and cohort.json
// counts per split.
inline const char* const kTumourKinds[] = {"enhancing", "non-enhancing", "multifocal"};
// A generated case's kind from its parameters (cohort.json's "tumour"): "non-enhancing" without
// enhancement, else "multifocal" with several foci, else "enhancing".
std::string tumour_kind(const nlohmann::json& params);
// The kinds of the `n` cases of a stratified split: every kind at least once where n >= 3 (as
// the labelled set of BraTS holds LGG and HGG; n = 1: enhancing, n = 2: enhancing and
// non-enhancing), the rest in the generator's proportions (enhancing unifocal 0.68,
// non-enhancing 0.2, multifocal 0.12), interleaved, e.g. n = 4: enhancing, non-enhancing,
// multifocal, enhancing.
std::vector<std::string> stratified_kinds(int n);

struct SynthCase {
  std::string id;
  std::array<Volume, 4> image;  // T1, T1ce, T2, FLAIR; int16-valued floats (WM ~ 1000 x gain)
  LabelMap labels;              // {0, 1 NCR, 2 ED, 4 ET}
  LabelMap tissue;              // 0 outside, 1 CSF, 2 GM, 3 WM: the largest healthy fraction
                                // (for tests and analysis; not written)
  nlohmann::json params;        // every generator parameter of the case, and its volumes in mL
};

SynthCase generate_case(const CohortAnatomy& anatomy, const CaseSpec& spec);

}  // namespace kdseg::synth
