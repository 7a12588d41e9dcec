#include "kdseg/io/check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"
#include "kdseg/util/progress.h"

namespace kdseg {

namespace {

// Whether a convention was named by --labels rather than the layout's own.
bool named_by_flag(const LabelConvention& labels, Layout layout) {
  return labels.name != layout_name(layout);
}

std::string spacing_text(const std::array<double, 3>& s) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3gx%.3gx%.3g mm", s[0], s[1], s[2]);
  return buf;
}

// qform and sform both set but mapping voxels to different places: reported, sform used.
std::string form_disagreement(const NiftiHeader& h) {
  if (h.qform_code <= 0 || h.sform_code <= 0) return "";
  Mat44 q = qform_matrix(h), s = sform_matrix(h);
  double worst = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) worst = std::max(worst, std::fabs(q[i][j] - s[i][j]));
  if (worst < 1e-3 * std::max(1.0, std::fabs(s[0][3]) + std::fabs(s[1][3]) + std::fabs(s[2][3])))
    return "";
  return "qform (" + axis_codes(q) + ") and sform (" + axis_codes(s) +
         ") disagree; kdseg uses the sform";
}

// pixdim's voxel sizes against the lengths of the chosen matrix's columns (what kdseg measures
// distances and volumes with).
std::string spacing_disagreement(const NiftiHeader& h) {
  if (h.sform_code <= 0) return "";  // the qform's columns are pixdim by construction
  const std::array<double, 3> m = affine_spacing(sform_matrix(h));
  for (int j = 0; j < 3; ++j)
    if (std::fabs(m[j] - h.pixdim[j + 1]) > 1e-3 * std::max(1.0, m[j])) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "pixdim gives %.4gx%.4gx%.4g mm but the sform's columns %.4gx%.4gx%.4g mm; "
                    "kdseg uses the sform's (HD95 and volumes in those mm)",
                    h.pixdim[1], h.pixdim[2], h.pixdim[3], m[0], m[1], m[2]);
      return buf;
    }
  return "";
}

CaseCheck check_case(const CaseFiles& files, const LabelConvention& convention) {
  CaseCheck out;
  out.id = files.id;
  Volume first;
  bool have_first = false;
  auto problem = [&](const std::string& where, const std::string& what) {
    out.problems.push_back(where + ": " + what);
  };
  std::vector<std::string> seen;
  for (int m = 0; m < kNumModalities; ++m) {
    const std::string& path = files.image[m];
    if (path.empty()) continue;  // discovery reports it, with the expected file name
    if (files.frame[m] >= 0 && std::find(seen.begin(), seen.end(), path) != seen.end()) continue;
    seen.push_back(path);
    try {
      Volume v = read_volume(path);
      const NiftiHeader& h = v.source;
      std::string name = files.frame[m] >= 0 ? "4D" : kModalityNames[m];
      out.info.push_back(name + ": " + shape_text(v.dim) +
                         (v.n_channels > 1 ? "x" + std::to_string(v.n_channels) : "") + ", " +
                         spacing_text(v.spacing) + ", " + datatype_name(h.datatype) + ", " +
                         axis_codes(affine(h)) + ", NIfTI-" + std::to_string(h.version));
      std::string d = form_disagreement(h);
      if (!d.empty()) problem(path, d);
      d = spacing_disagreement(h);
      if (!d.empty()) problem(path, d);
      if (files.frame[m] < 0 && v.n_channels > 1)
        problem(path, "a 4D image of " + std::to_string(v.n_channels) + " volumes where one 3D " +
                          kModalityNames[m] + " volume is expected");
      if (!have_first) {
        first = std::move(v);
        have_first = true;
      } else if (v.dim != first.dim) {
        problem(path, "shape " + shape_text(v.dim) + " differs from " + shape_text(first.dim) +
                          " of the case's first modality");
      } else if (!same_grid(v, first, 1e-2)) {
        problem(path, "affine differs from the case's first modality (not co-registered)");
      }
    } catch (const Error& e) {
      out.problems.push_back(e.what());
    }
  }
  if (files.frame[0] >= 0 && have_first && first.n_channels < kNumModalities)
    problem(files.image[0], "has " + std::to_string(first.n_channels) + " frame(s), expected 4");
  if (files.seg.empty()) {
    out.labels = "unlabelled";
  } else {
    try {
      LabelMap lm = read_labels(files.seg);
      std::array<int64_t, 256> count{};
      for (uint8_t v : lm.data) ++count[v];
      const auto lut = label_lut_to_internal(convention);
      std::string text = "labels";
      std::string bad;
      for (int v = 0; v < 256; ++v) {
        if (!count[v]) continue;
        text += " " + std::to_string(v) + ":" + std::to_string(count[v]);
        if (lut[v] == kInvalidLabel) bad += (bad.empty() ? "" : ", ") + std::to_string(v);
        if (lut[v] == 4) out.n_enhancing += count[v];
      }
      if (convention.resection_cavity >= 0 && count[convention.resection_cavity]) {
        out.n_resection_cavity = count[convention.resection_cavity];
        text += " (" + std::to_string(convention.resection_cavity) +
                " = resection cavity, read as background)";
      }
      out.labels = text;
      if (!bad.empty())
        problem(files.seg, "label values outside the " + convention.name + " convention: " + bad);
      if (have_first && (lm.dim != first.dim || !same_grid(lm, first, 1e-2)))
        problem(files.seg, "label map is not on the grid of the case's images (" +
                               shape_text(lm.dim) + " vs " + shape_text(first.dim) + ")");
    } catch (const Error& e) {
      out.labels = "unreadable";
      out.problems.push_back(e.what());
    }
  }
  return out;
}

}  // namespace

CheckReport check_dataset(const CheckOptions& opt) {
  CheckReport r;
  r.dataset = discover_dataset(opt.dir);
  if (opt.labels != "auto")
    r.dataset.labels = LabelConvention(parse_layout(opt.labels, "--labels"));
  r.cases.resize(r.dataset.cases.size());
  Progress progress("check", static_cast<int64_t>(r.cases.size()), opt.quiet);
  parallel_for(static_cast<int64_t>(r.cases.size()), opt.threads, [&](int64_t i) {
    r.cases[i] = check_case(r.dataset.cases[i], r.dataset.labels);
    const auto& c = r.cases[i];
    progress.done(c.id,
                  c.problems.empty() ? "ok" : std::to_string(c.problems.size()) + " problem(s)");
  });
  // Discovery's problems about a case (a missing modality) are listed with that case too.
  for (const auto& p : r.dataset.problems) {
    for (auto& c : r.cases)
      if (p.find("/" + c.id + "/") != std::string::npos) c.problems.insert(c.problems.begin(), p);
  }
  r.problems = r.dataset.problems;
  // Value 4 read as a resection cavity while no case has ET: BraTS 2018-2021 labels (ET = 4)
  // under BraTS 2023 file names read the same way, and would lose every ET. Named brats2024
  // (--labels), the labels are what the user says.
  int n_with_et = 0;
  for (const auto& c : r.cases) {
    r.n_resection_cavity_cases += c.n_resection_cavity > 0;
    n_with_et += c.n_enhancing > 0;
  }
  if (r.n_resection_cavity_cases > 0 && n_with_et == 0 && r.dataset.labels.name == "brats2023")
    r.problems.push_back(
        r.dataset.root + ": value 4 is read as BraTS 2024's resection cavity (background) in " +
        std::to_string(r.n_resection_cavity_cases) +
        " case(s), but no case has an enhancing tumour (3); if ET is 4 here (BraTS 2018-2021 "
        "values under 2023 file names), relabel 4 to 3 or use the 2018-2021 names; if these are "
        "BraTS 2024 cases without enhancement, say so with --labels brats2024");
  for (const auto& c : r.cases)
    for (const auto& p : c.problems)
      if (std::find(r.problems.begin(), r.problems.end(), p) == r.problems.end())
        r.problems.push_back(p);
  return r;
}

std::string format_check_report(const CheckReport& r) {
  std::ostringstream s;
  int64_t labelled = 0;
  for (const auto& c : r.dataset.cases) labelled += !c.seg.empty();
  s << r.dataset.root << ": " << layout_name(r.dataset.layout) << " layout";
  const LabelConvention& labels = r.dataset.labels;
  if (labels.resection_cavity >= 0 &&
      (r.n_resection_cavity_cases > 0 || labels.name == "brats2024")) {
    // BraTS 2024 (or an nnU-Net dataset naming RC): say how the cavity is read.
    s << " (labels " << (labels.name == "brats2023" ? "brats2024" : labels.name) << ": "
      << labels.resection_cavity << " = resection cavity (RC) in " << r.n_resection_cavity_cases
      << " case(s); RC is not tumour (TC = ET + NETC, WT = ET + NETC + SNFH, as BraTS 2024 "
         "scores them): read as background, so training keeps cavities out of all three regions "
         "and predictions never hold RC)";
  } else if (r.dataset.layout == Layout::nnunet || named_by_flag(labels, r.dataset.layout)) {
    s << " (labels " << labels.name << ")";
  }
  s << ", " << r.cases.size() << " case(s), " << labelled << " labelled, "
    << r.cases.size() - labelled << " unlabelled\n";
  for (const auto& c : r.cases) {
    s << c.id
      << (c.problems.empty() ? "" : "  [" + std::to_string(c.problems.size()) + " problem(s)]")
      << "\n";
    for (const auto& line : c.info) s << "  " << line << "\n";
    s << "  " << c.labels << "\n";
  }
  if (r.problems.empty()) {
    s << "no problems found\n";
  } else {
    s << r.problems.size() << " problem(s):\n";
    for (const auto& p : r.problems) s << "  - " << p << "\n";
  }
  return s.str();
}

}  // namespace kdseg
