#include "kdseg/synth/montage.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include "kdseg/io/dataset.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace fs = std::filesystem;

namespace {

struct Window {
  float lo = 0, hi = 1;
};

Window window_of(const float* v, int64_t n) {
  std::vector<float> nz;
  nz.reserve(static_cast<size_t>(n / 4));
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != 0 && std::isfinite(v[i])) nz.push_back(v[i]);
  if (nz.empty()) return {0, 1};
  auto q = [&](double f) {
    const size_t k = static_cast<size_t>(f * static_cast<double>(nz.size() - 1));
    std::nth_element(nz.begin(), nz.begin() + static_cast<std::ptrdiff_t>(k), nz.end());
    return nz[k];
  };
  Window w{q(0.005), q(0.995)};
  if (w.hi <= w.lo) w.hi = w.lo + 1;
  return w;
}

void label_colour(uint8_t l, uint8_t rgb[3]) {
  rgb[0] = rgb[1] = rgb[2] = 0;
  if (l == 1) {
    rgb[0] = 230;
    rgb[1] = 40;
    rgb[2] = 40;
  }  // NCR red
  else if (l == 2) {
    rgb[0] = 40;
    rgb[1] = 200;
    rgb[2] = 60;
  }  // ED green
  else if (l == 4) {
    rgb[0] = 250;
    rgb[1] = 230;
    rgb[2] = 30;
  }  // ET yellow
  else if (l != 0) {
    rgb[0] = 60;
    rgb[1] = 120;
    rgb[2] = 250;
  }  // anything else blue
}

}  // namespace

RgbImage render_montage(const Volume& img, const std::vector<std::string>& names,
                        const LabelMap* labels, int panel_px) {
  const auto& d = img.dim;
  const int64_t nvox = img.n_voxels();
  const int n_ch = static_cast<int>(img.n_channels);
  const bool have_labels = labels && labels->n_voxels() == nvox;
  // Slice position: centroid of the labels, else of the non-zero voxels of channel 0.
  double c[3] = {0, 0, 0}, n = 0;
  for (int pass = 0; pass < 2 && n == 0; ++pass)
    for (int64_t z = 0; z < d[2]; ++z)
      for (int64_t y = 0; y < d[1]; ++y)
        for (int64_t x = 0; x < d[0]; ++x) {
          const int64_t v = (z * d[1] + y) * d[0] + x;
          const bool in = pass == 0 ? (have_labels && labels->data[static_cast<size_t>(v)] != 0)
                                    : img.data[static_cast<size_t>(v)] != 0;
          if (!in) continue;
          c[0] += x;
          c[1] += y;
          c[2] += z;
          n += 1;
        }
  int64_t cy = d[1] / 2, cz = d[2] / 2;  // sagittal position c[0] unused: two views
  if (n > 0) {
    cy = std::llround(c[1] / n);
    cz = std::llround(c[2] / n);
  }
  // Physical size of the panels: the larger in-plane extent maps to panel_px pixels.
  const double ex = d[0] * img.spacing[0], ey = d[1] * img.spacing[1], ez = d[2] * img.spacing[2];
  const double mm_per_px = std::max(ex, ey) / panel_px;
  const int pw = static_cast<int>(std::lround(ex / mm_per_px));
  const int ph_ax = static_cast<int>(std::lround(ey / mm_per_px));
  const int ph_co = static_cast<int>(std::lround(ez / mm_per_px));
  const int gap = 4, title = 14;
  const int n_cols = n_ch + (have_labels ? 1 : 0);
  RgbImage out(n_cols * pw + (n_cols + 1) * gap, title + ph_ax + ph_co + 3 * gap, 0);
  std::vector<Window> win(static_cast<size_t>(n_ch));
  for (int ch = 0; ch < n_ch; ++ch) win[static_cast<size_t>(ch)] = window_of(img.channel(ch), nvox);
  const int overlay_ch = n_ch - 1;  // FLAIR in kdseg's order
  const uint8_t white[3] = {235, 235, 235};
  for (int col = 0; col < n_cols; ++col) {
    const bool overlay = col == n_ch;
    const int ch = overlay ? overlay_ch : col;
    const int x0 = gap + col * (pw + gap);
    std::string name = overlay
                           ? "LABELS"
                           : (col < static_cast<int>(names.size()) ? names[static_cast<size_t>(col)]
                                                                   : "CH" + std::to_string(col));
    draw_text(out, x0 + 2, 3, name, white, 1);
    for (int view = 0; view < 2; ++view) {  // 0 axial (z = cz), 1 coronal (y = cy)
      const int y0 = title + gap + (view == 0 ? 0 : ph_ax + gap);
      const int ph = view == 0 ? ph_ax : ph_co;
      for (int py = 0; py < ph; ++py)
        for (int px = 0; px < pw; ++px) {
          // Column 0 = patient's right (largest canonical x); row 0 = anterior / superior.
          int64_t x = d[0] - 1 - static_cast<int64_t>((px + 0.5) * mm_per_px / img.spacing[0]);
          int64_t y, z;
          if (view == 0) {
            y = d[1] - 1 - static_cast<int64_t>((py + 0.5) * mm_per_px / img.spacing[1]);
            z = cz;
          } else {
            z = d[2] - 1 - static_cast<int64_t>((py + 0.5) * mm_per_px / img.spacing[2]);
            y = cy;
          }
          x = std::clamp<int64_t>(x, 0, d[0] - 1);
          y = std::clamp<int64_t>(y, 0, d[1] - 1);
          z = std::clamp<int64_t>(z, 0, d[2] - 1);
          const int64_t v = (z * d[1] + y) * d[0] + x;
          const Window& w = win[static_cast<size_t>(ch)];
          const float val = img.channel(ch)[v];
          const float g = std::clamp((val - w.lo) / (w.hi - w.lo), 0.f, 1.f) * 255.f;
          uint8_t* p = out.at(x0 + px, y0 + py);
          p[0] = p[1] = p[2] = static_cast<uint8_t>(g);
          if (overlay) {
            uint8_t rgb[3];
            const uint8_t l = labels->data[static_cast<size_t>(v)];
            if (l != 0) {
              label_colour(l, rgb);
              for (int k = 0; k < 3; ++k)
                p[k] = static_cast<uint8_t>(0.45f * p[k] + 0.55f * rgb[k]);
            }
          }
        }
    }
  }
  return out;
}

std::string write_montage(const MontageOptions& opt) {
  if (opt.inputs.empty())
    throw Error("--case", "nothing to show", "give a case folder or image files");
  Volume img;
  std::vector<std::string> names;
  std::optional<LabelMap> labels;
  std::string what;
  if (opt.inputs.size() == 1 && fs::is_directory(opt.inputs[0])) {
    const Dataset ds = discover_dataset(opt.inputs[0]);
    if (ds.cases.empty()) throw Error(opt.inputs[0], "no case found");
    const CaseFiles& cf = ds.cases.front();
    CaseData cd = load_case(cf, ds.labels);
    img = std::move(cd.image);
    labels = std::move(cd.labels);
    names = {"T1", "T1CE", "T2", "FLAIR"};
    what = cf.id +
           (ds.cases.size() > 1 ? " (first of " + std::to_string(ds.cases.size()) + " cases)" : "");
  } else {
    std::vector<Volume> vols;
    for (const auto& f : opt.inputs) vols.push_back(read_volume(f, true));
    img = vols[0];
    for (size_t i = 1; i < vols.size(); ++i) {
      if (vols[i].dim != img.dim) throw Error(opt.inputs[i], "not on the grid of " + opt.inputs[0]);
      img.data.insert(img.data.end(), vols[i].data.begin(), vols[i].data.end());
      img.n_channels += vols[i].n_channels;
    }
    static const char* kNames[4] = {"T1", "T1CE", "T2", "FLAIR"};
    for (int64_t c = 0; c < img.n_channels; ++c)
      names.push_back(
          img.n_channels == 4
              ? kNames[c]
              : fs::path(
                    opt.inputs[std::min<size_t>(static_cast<size_t>(c), opt.inputs.size() - 1)])
                    .filename()
                    .string()
                    .substr(0, 12));
    if (!opt.seg.empty()) {
      labels = read_labels(opt.seg);
      if (labels->dim != img.dim) throw Error(opt.seg, "label map is not on the image grid");
    }
    what = opt.inputs[0];
  }
  const RgbImage png = render_montage(img, names, labels ? &*labels : nullptr, opt.panel_px);
  write_png(opt.out, png);
  return what + " -> " + opt.out + " (" + std::to_string(png.width) + "x" +
         std::to_string(png.height) + ")";
}

}  // namespace kdseg
