#pragma once
// The report's slice viewer data: for each test case, its four modalities (windowed to uint8) and
// its label maps (reference, each method's prediction) as small NIfTI files that NiiVue reads,
// inlined base64 into one script per case (pages opened from file:// cannot fetch files, but can
// load scripts), plus static PNG slices with the same overlays for browsers without WebGL2.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "kdseg/io/dataset.h"
#include "kdseg/io/image.h"
#include "kdseg/synth/png.h"

namespace kdseg::report {

// RFC 4648 base64 with padding.
std::string base64_encode(const uint8_t* data, size_t n);

// Intensities to 0..255 between the 0.5th and 99.5th percentiles of the non-zero voxels;
// background (exactly 0) stays 0.
std::vector<uint8_t> window_to_uint8(const float* values, int64_t n);

// A .nii.gz file (bytes) of a uint8 volume on the canonical grid (RAS+, affine diag(spacing)):
// what the viewer loads. `cal_max` sets the display range, e.g. 255 for images, 4 for labels.
std::vector<uint8_t> encode_view_volume(const std::vector<uint8_t>& voxels,
                                        const std::array<int64_t, 3>& dim,
                                        const std::array<double, 3>& spacing, double cal_max);

// The voxel the static slices go through: the centroid of the non-zero voxels of `labels` when
// given and not empty, else of the non-zero voxels of `grey`, else the grid's centre.
std::array<int64_t, 3> slice_centre(const std::vector<uint8_t>& grey, const LabelMap* labels,
                                    const std::array<int64_t, 3>& dim);

// Axial, coronal and sagittal slices through `centre` side by side, `grey` (uint8, canonical grid)
// with `labels` (internal convention, may be null) blended over it in BraTS colours (NCR red,
// ED green, ET yellow). Radiological convention: the patient's right on the image's left.
RgbImage render_slices(const std::vector<uint8_t>& grey, const LabelMap* labels,
                       const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing,
                       const std::array<int64_t, 3>& centre, int panel_px);

// One case for the viewer: its files and its predictions as (method, path).
struct ViewerCase {
  CaseFiles files;
  LabelConvention labels = Layout::brats2021;              // of the references and predictions
  std::vector<std::pair<std::string, std::string>> preds;  // e.g. {"ensemble", ".../ID.nii.gz"}
};

// Writes OUT/data/case_NNN.js (FLAIR and the label maps), OUT/data/case_NNN_<modality>.js (T1,
// T1ce, T2) and OUT/png/case_NNN_<source>.png for case number `index`, and returns its entry for
// the page: {"id", "scripts", "sources", "png", "dim", "spacing", "centre", "problems"}. A
// prediction that cannot be read or is on another grid is left out and named in "problems"; a case
// whose images cannot be read throws kdseg::Error.
nlohmann::json write_viewer_case(const ViewerCase& c, int index, const std::string& out_dir,
                                 int panel_px);

}  // namespace kdseg::report
