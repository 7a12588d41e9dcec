#pragma once
// The healthy brain every synthetic case starts from: the Colin27 template of Debian's
// `mricron-data` turned into tissue fractions (CSF, GM, WM) plus the landmarks the generator
// needs (depth below the brain surface, ventricles, periventricular white matter).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kdseg/io/image.h"
#include "kdseg/synth/field.h"

namespace kdseg::synth {

// Channels of TissueTemplate::tissue.
enum TissueChannel : int {
  kCsf = 0,    // CSF fraction [0, 1]
  kGm = 1,     // grey matter fraction
  kWm = 2,     // white matter fraction
  kDepth = 3,  // mm below the brain surface (0 outside the brain)
  kVent = 4,   // ventricular CSF fraction (part of kCsf)
  kPeriv = 5,  // periventricular white matter weight [0, 1] (where FLAIR "caps" appear)
  kNumTissueChannels = 6,
};

struct TissueTemplate {
  Field tissue;            // kNumTissueChannels channels, template (MNI) mm
  Vec3 brain_lo{0, 0, 0};  // bounding box of the brain (fraction > 0.5), mm
  Vec3 brain_hi{0, 0, 0};
  std::array<double, 2> gm_wm_means{0, 0};  // intensities the GM/WM unmixing used
  std::string source;                       // the files it was made from
};

// The default location of the Colin27 templates (Debian package mricron-data).
constexpr const char* kDefaultTemplateDir = "/usr/share/mricron/templates";

// Means of a k-class 1D Gaussian mixture fitted by EM to a histogram (bin b = intensity b),
// initialised at evenly spaced quantiles; returned in increasing order. Pure.
std::vector<double> fit_gaussian_mixture(const std::vector<double>& histogram, int k,
                                         int iterations = 100);

// Partial-volume unmixing of one intensity between the GM and WM means: the WM fraction
// (0 at or below the GM mean, 1 at or above the WM mean, linear between).
inline float wm_fraction(float v, double gm_mean, double wm_mean) {
  float t = static_cast<float>((v - gm_mean) / (wm_mean - gm_mean));
  return t < 0.f ? 0.f : (t > 1.f ? 1.f : t);
}

// Builds the 1 mm template from `bet` (ch2bet: 1 mm skull-stripped T1 with CSF, gives the brain
// mask) and `better` (ch2better: 0.5 mm, CSF removed to 0, gives GM/WM and the CSF fraction at
// twice the resolution). Both in canonical (RAS) orientation as read_volume returns them.
TissueTemplate build_template(const Volume& bet, const Volume& better);

// Reads ch2bet.nii.gz and ch2better.nii.gz from `dir` and builds the 1 mm template. Throws
// kdseg::Error naming the missing file and the Debian package (`mricron-data`) that provides it.
TissueTemplate load_colin27(const std::string& dir = kDefaultTemplateDir);

// The template box-averaged to `factor` mm (e.g. 2 or 3): the anti-aliased coarse anatomy.
TissueTemplate downsample_template(const TissueTemplate& t, int factor);

// Canonical voxel (0,0,0)'s position in world mm: canonical voxel (i,j,k) sits at
// origin + spacing * (i,j,k) for the axis-aligned images kdseg handles here.
Vec3 canonical_origin(const Volume& img);

}  // namespace kdseg::synth
