#include "kdseg/report/viewer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

namespace kdseg::report {

namespace fs = std::filesystem;

namespace {

// BraTS colours, as `kdseg montage` draws them: NCR red, ED green, ET yellow; others blue.
void label_colour(uint8_t l, uint8_t rgb[3]) {
  static const uint8_t kNcr[3] = {230, 40, 40}, kEd[3] = {40, 200, 60}, kEt[3] = {250, 230, 30},
                       kOther[3] = {60, 120, 250};
  const uint8_t* c = l == 1 ? kNcr : l == 2 ? kEd : l == 4 ? kEt : kOther;
  std::copy(c, c + 3, rgb);
}

// A file-name-safe form of a method name, e.g. "resunet-vae" stays, "a b" -> "a_b".
std::string safe_name(const std::string& s) {
  std::string out;
  for (char ch : s)
    out += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_') ? ch : '_';
  return out.empty() ? "_" : out;
}

void write_text(const fs::path& path, const std::string& text) {
  write_file_atomic(path.string(), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

}  // namespace

std::string base64_encode(const uint8_t* data, size_t n) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < n) {
    const uint32_t v = (uint32_t{data[i]} << 16) | (i + 1 < n ? uint32_t{data[i + 1]} << 8 : 0);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::vector<uint8_t> window_to_uint8(const float* values, int64_t n) {
  std::vector<float> nz;
  nz.reserve(static_cast<size_t>(n / 4));
  for (int64_t i = 0; i < n; ++i)
    if (values[i] != 0 && std::isfinite(values[i])) nz.push_back(values[i]);
  float lo = 0, hi = 1;
  if (!nz.empty()) {
    auto q = [&](double f) {
      const size_t k = static_cast<size_t>(f * static_cast<double>(nz.size() - 1));
      std::nth_element(nz.begin(), nz.begin() + static_cast<std::ptrdiff_t>(k), nz.end());
      return nz[k];
    };
    lo = q(0.005);
    hi = q(0.995);
    if (hi <= lo) hi = lo + 1;
  }
  std::vector<uint8_t> out(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const float v = values[i];
    if (v == 0 || !std::isfinite(v)) continue;
    // Brain voxels map to 1..255 so that they never look like background.
    const float g = 1.f + 254.f * std::clamp((v - lo) / (hi - lo), 0.f, 1.f);
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(std::lround(g));
  }
  return out;
}

std::vector<uint8_t> encode_view_volume(const std::vector<uint8_t>& voxels,
                                        const std::array<int64_t, 3>& dim,
                                        const std::array<double, 3>& spacing, double cal_max) {
  Mat44 ras{};
  for (int i = 0; i < 3; ++i) ras[static_cast<size_t>(i)][static_cast<size_t>(i)] = spacing[i];
  // Centre the grid on the world origin, as a scanner grid roughly is.
  for (int i = 0; i < 3; ++i) ras[static_cast<size_t>(i)][3] = -0.5 * (dim[i] - 1) * spacing[i];
  ras[3][3] = 1;
  NiftiHeader h = make_header(dim, ras, 1, kNiftiUInt8);
  h.cal_min = 0;
  h.cal_max = cal_max;
  h.descrip = "kdseg report";
  const std::vector<uint8_t> nii = encode_nifti(h, voxels.data(), voxels.size());
  return gzip(nii.data(), nii.size(), 6);
}

std::array<int64_t, 3> slice_centre(const std::vector<uint8_t>& grey, const LabelMap* labels,
                                    const std::array<int64_t, 3>& dim) {
  for (int pass = 0; pass < 2; ++pass) {
    const uint8_t* v = pass == 0 ? (labels ? labels->data.data() : nullptr) : grey.data();
    if (!v) continue;
    double c[3] = {0, 0, 0}, n = 0;
    for (int64_t z = 0, i = 0; z < dim[2]; ++z)
      for (int64_t y = 0; y < dim[1]; ++y)
        for (int64_t x = 0; x < dim[0]; ++x, ++i)
          if (v[i] != 0) {
            c[0] += static_cast<double>(x);
            c[1] += static_cast<double>(y);
            c[2] += static_cast<double>(z);
            n += 1;
          }
    if (n > 0) return {std::llround(c[0] / n), std::llround(c[1] / n), std::llround(c[2] / n)};
  }
  return {dim[0] / 2, dim[1] / 2, dim[2] / 2};
}

RgbImage render_slices(const std::vector<uint8_t>& grey, const LabelMap* labels,
                       const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing,
                       const std::array<int64_t, 3>& centre, int panel_px) {
  const double ext[3] = {dim[0] * spacing[0], dim[1] * spacing[1], dim[2] * spacing[2]};
  const double mm_per_px = std::max({ext[0], ext[1], ext[2]}) / std::max(panel_px, 8);
  // Panels: 0 axial (x right-to-left, y anterior-to-posterior), 1 coronal (x, z superior down),
  // 2 sagittal (y posterior-to-anterior, z).
  const int w[3] = {static_cast<int>(std::lround(ext[0] / mm_per_px)),
                    static_cast<int>(std::lround(ext[0] / mm_per_px)),
                    static_cast<int>(std::lround(ext[1] / mm_per_px))};
  const int h[3] = {static_cast<int>(std::lround(ext[1] / mm_per_px)),
                    static_cast<int>(std::lround(ext[2] / mm_per_px)),
                    static_cast<int>(std::lround(ext[2] / mm_per_px))};
  const int gap = 4;
  const int height = std::max({h[0], h[1], h[2]}) + 2 * gap;
  RgbImage out(w[0] + w[1] + w[2] + 4 * gap, height, 0);
  const uint8_t grey_text[3] = {200, 200, 200};
  auto voxel = [&](double mm, int axis) {
    return std::clamp<int64_t>(static_cast<int64_t>(mm / spacing[axis]), 0, dim[axis] - 1);
  };
  int x0 = gap;
  for (int p = 0; p < 3; ++p) {
    const int y0 = gap + (height - 2 * gap - h[p]) / 2;
    for (int py = 0; py < h[p]; ++py)
      for (int px = 0; px < w[p]; ++px) {
        const double u = (px + 0.5) * mm_per_px, v = (py + 0.5) * mm_per_px;
        int64_t x = centre[0], y = centre[1], z = centre[2];
        if (p == 0) {
          x = dim[0] - 1 - voxel(u, 0);
          y = dim[1] - 1 - voxel(v, 1);
        } else if (p == 1) {
          x = dim[0] - 1 - voxel(u, 0);
          z = dim[2] - 1 - voxel(v, 2);
        } else {
          y = voxel(u, 1);
          z = dim[2] - 1 - voxel(v, 2);
        }
        const size_t i = static_cast<size_t>((z * dim[1] + y) * dim[0] + x);
        uint8_t* o = out.at(x0 + px, y0 + py);
        o[0] = o[1] = o[2] = grey[i];
        if (labels && labels->data[i] != 0) {
          uint8_t rgb[3];
          label_colour(labels->data[i], rgb);
          for (int k = 0; k < 3; ++k) o[k] = static_cast<uint8_t>(0.4f * o[k] + 0.6f * rgb[k]);
        }
      }
    // Orientation letters at the panels' left edges: R (axial, coronal), P (sagittal).
    draw_text(out, x0 + 2, y0 + 2, p == 2 ? "P" : "R", grey_text, 1);
    x0 += w[p] + gap;
  }
  return out;
}

nlohmann::json write_viewer_case(const ViewerCase& c, int index, const std::string& out_dir,
                                 int panel_px) {
  char stem[32];
  std::snprintf(stem, sizeof stem, "case_%03d", index);
  CaseData cd = load_case(c.files, c.labels);
  const Volume& img = cd.image;
  const int64_t n = img.n_voxels();
  nlohmann::json entry;
  entry["id"] = c.files.id;
  entry["dim"] = img.dim;
  entry["spacing"] = img.spacing;
  entry["problems"] = nlohmann::json::array();

  // FLAIR travels with the labels in data/case_NNN.js; the other modalities each in their own
  // data/case_NNN_<modality>.js, loaded when the viewer switches to them.
  nlohmann::json data;
  data["id"] = c.files.id;
  data["volumes"] = nlohmann::json::object();
  entry["scripts"] = {{"main", std::string("data/") + stem + ".js"}};
  fs::create_directories(fs::path(out_dir) / "data");
  std::vector<uint8_t> flair;
  for (int m = 0; m < kNumModalities; ++m) {
    const std::string name = kModalityNames[static_cast<size_t>(m)];
    std::vector<uint8_t> g = window_to_uint8(img.channel(m), n);
    const std::vector<uint8_t> nii = encode_view_volume(g, img.dim, img.spacing, 255);
    if (m == kNumModalities - 1) {
      data["volumes"][name] = base64_encode(nii.data(), nii.size());
      flair = std::move(g);
      continue;
    }
    const std::string rel = std::string("data/") + stem + "_" + name + ".js";
    const nlohmann::json part = {{"volumes", {{name, base64_encode(nii.data(), nii.size())}}}};
    write_text(fs::path(out_dir) / rel, "kdsegCase(" + std::to_string(index) + ", \"" + name +
                                            "\", " + part.dump() + ");\n");
    entry["scripts"][name] = rel;
  }

  // Label maps: the reference first, then each method's prediction on the same grid.
  std::vector<std::pair<std::string, LabelMap>> sources;
  if (cd.labels) sources.emplace_back("reference", std::move(*cd.labels));
  for (const auto& [method, path] : c.preds) {
    try {
      LabelMap lm = load_label_map(path, c.labels);
      if (lm.dim != img.dim || !same_grid(lm, img, 1e-2))
        throw Error(path, "is not on the grid of the case's images (" + shape_text(lm.dim) +
                              " vs " + shape_text(img.dim) + ")");
      sources.emplace_back(method, std::move(lm));
    } catch (const std::exception& e) {
      entry["problems"].push_back(method + ": " + e.what());
    }
  }
  const LabelMap* centre_labels = sources.empty() ? nullptr : &sources.front().second;
  const std::array<int64_t, 3> centre = slice_centre(flair, centre_labels, img.dim);
  entry["centre"] = centre;
  entry["sources"] = nlohmann::json::array();
  entry["png"] = nlohmann::json::object();
  data["labels"] = nlohmann::json::object();
  fs::create_directories(fs::path(out_dir) / "png");
  auto write_png_of = [&](const std::string& source, const LabelMap* lm) {
    const std::string rel = std::string("png/") + stem + "_" + safe_name(source) + ".png";
    write_png((fs::path(out_dir) / rel).string(),
              render_slices(flair, lm, img.dim, img.spacing, centre, panel_px));
    entry["png"][source] = rel;
  };
  write_png_of("flair", nullptr);
  for (const auto& [source, lm] : sources) {
    const std::vector<uint8_t> nii = encode_view_volume(lm.data, lm.dim, lm.spacing, 4);
    data["labels"][source] = base64_encode(nii.data(), nii.size());
    entry["sources"].push_back(source);
    write_png_of(source, &lm);
  }
  write_text(fs::path(out_dir) / "data" / (std::string(stem) + ".js"),
             "kdsegCase(" + std::to_string(index) + ", \"main\", " +
                 data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ");\n");
  return entry;
}

}  // namespace kdseg::report
