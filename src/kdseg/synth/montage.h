#pragma once
// `kdseg montage`: one PNG showing a case without a viewer — an axial and a coronal slice through
// the tumour (or the brain's centre) of every modality, and the labels over FLAIR (NCR red,
// oedema green, ET yellow). Radiological convention: the patient's right on the image's left.
#include <string>
#include <vector>

#include "kdseg/io/image.h"
#include "kdseg/synth/png.h"

namespace kdseg {

struct MontageOptions {
  std::vector<std::string> inputs;  // a case folder (BraTS 2018-2021/2023, MSD), or image files
                                    // (T1, T1ce, T2, FLAIR order; any count, 3D or 4D)
  std::string seg;                  // label map when `inputs` are files; "" = none
  std::string out = "montage.png";  // PNG to write, e.g. "case.png"
  int panel_px = 240;               // width of one panel in pixels, e.g. 240
};

// Renders channels of `image` (canonical orientation) and, when given, `labels` in kdseg's
// internal convention {0,1,2,4}. `names` label the columns, e.g. {"T1","T1CE","T2","FLAIR"}.
RgbImage render_montage(const Volume& image, const std::vector<std::string>& names,
                        const LabelMap* labels, int panel_px = 240);

// Loads the case described by `opt` and writes the PNG. Returns a one-line description.
std::string write_montage(const MontageOptions& opt);

}  // namespace kdseg
