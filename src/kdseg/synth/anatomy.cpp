#include "kdseg/synth/anatomy.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"

namespace kdseg::synth {

std::vector<double> fit_gaussian_mixture(const std::vector<double>& hist, int k, int iterations) {
  const int nb = static_cast<int>(hist.size());
  double total = 0;
  for (double h : hist) total += h;
  if (total <= 0 || k < 1) throw Error("fit_gaussian_mixture", "empty histogram");
  std::vector<double> mu(static_cast<size_t>(k)), var(static_cast<size_t>(k)),
      pi(static_cast<size_t>(k), 1.0 / k);
  // Initialise at the (c + 0.5)/k quantiles.
  {
    double acc = 0;
    int c = 0;
    for (int b = 0; b < nb && c < k; ++b) {
      acc += hist[static_cast<size_t>(b)];
      while (c < k && acc >= total * (c + 0.5) / k) mu[static_cast<size_t>(c++)] = b;
    }
    double spread = (mu.back() - mu.front()) / std::max(1, k) + 1;
    for (auto& v : var) v = spread * spread;
  }
  std::vector<double> resp(static_cast<size_t>(k));
  for (int it = 0; it < iterations; ++it) {
    std::vector<double> s0(static_cast<size_t>(k), 0), s1(static_cast<size_t>(k), 0),
        s2(static_cast<size_t>(k), 0);
    for (int b = 0; b < nb; ++b) {
      const double h = hist[static_cast<size_t>(b)];
      if (h <= 0) continue;
      double norm = 0;
      for (int c = 0; c < k; ++c) {
        const size_t cc = static_cast<size_t>(c);
        const double d = b - mu[cc];
        resp[cc] = pi[cc] / std::sqrt(var[cc]) * std::exp(-0.5 * d * d / var[cc]);
        norm += resp[cc];
      }
      if (norm <= 0) continue;
      for (int c = 0; c < k; ++c) {
        const size_t cc = static_cast<size_t>(c);
        const double r = h * resp[cc] / norm;
        s0[cc] += r;
        s1[cc] += r * b;
        s2[cc] += r * b * b;
      }
    }
    for (int c = 0; c < k; ++c) {
      const size_t cc = static_cast<size_t>(c);
      if (s0[cc] <= 0) continue;
      mu[cc] = s1[cc] / s0[cc];
      var[cc] = std::max(1.0, s2[cc] / s0[cc] - mu[cc] * mu[cc]);
      pi[cc] = s0[cc] / total;
    }
  }
  std::sort(mu.begin(), mu.end());
  return mu;
}

Vec3 canonical_origin(const Volume& img) {
  // File voxel that lands on canonical (0,0,0): along canonical axis a, file axis perm[a], at
  // index 0, or at its last index when flipped.
  std::array<double, 4> fidx{0, 0, 0, 1};
  for (int a = 0; a < 3; ++a)
    if (img.to_canonical.flip[a])
      fidx[static_cast<size_t>(img.to_canonical.perm[a])] = static_cast<double>(img.dim[a] - 1);
  const Mat44 m = affine(img.source);
  Vec3 o{};
  for (int r = 0; r < 3; ++r)
    o[r] = m[r][0] * fidx[0] + m[r][1] * fidx[1] + m[r][2] * fidx[2] + m[r][3];
  return o;
}

TissueTemplate build_template(const Volume& bet, const Volume& better) {
  TissueTemplate t;
  // GM and WM means of the 0.5 mm image (its non-zero voxels: CSF is already 0 there).
  std::vector<double> hist(256, 0.0);
  float vmax = 0;
  for (float v : better.data) vmax = std::max(vmax, v);
  const double hscale = vmax > 0 ? 255.0 / vmax : 1.0;
  for (float v : better.data)
    if (v > 0) hist[static_cast<size_t>(std::min(255.0, std::round(v * hscale)))] += 1;
  std::vector<double> mu = fit_gaussian_mixture(hist, 2);
  const double gm_mean = mu[0] / hscale, wm_mean = mu[1] / hscale;
  t.gm_wm_means = {gm_mean, wm_mean};

  const Vec3 ob = canonical_origin(bet), oh = canonical_origin(better);
  const double sb = bet.spacing[0], sh = better.spacing[0];
  // 1 mm grid of the bet image, cropped later to the brain.
  Grid g;
  g.dim = bet.dim;
  g.spacing = sb;
  g.origin = ob;
  Field full(g, kNumTissueChannels);
  // Tent filter over the fine image: fine samples within one coarse voxel, weighted by overlap.
  const int r = static_cast<int>(std::round(sb / sh));  // 2 for 1 mm / 0.5 mm
  std::vector<float> w1(static_cast<size_t>(2 * r + 1));
  {
    double sum = 0;
    for (int q = -r; q <= r; ++q) {
      double w = std::max(0.0, 1.0 - std::abs(q) / static_cast<double>(r));
      w1[static_cast<size_t>(q + r)] = static_cast<float>(w);
      sum += w;
    }
    for (auto& w : w1) w = static_cast<float>(w / sum);
  }
  for (int64_t k = 0; k < g.dim[2]; ++k)
    for (int64_t j = 0; j < g.dim[1]; ++j)
      for (int64_t i = 0; i < g.dim[0]; ++i) {
        const Vec3 p = g.position(i, j, k);
        const float bv = bet.at(i, j, k);
        int64_t c[3];
        for (int a = 0; a < 3; ++a) c[a] = std::llround((p[a] - oh[a]) / sh);
        float csf = 0, gm = 0, wm = 0, wsum = 0;
        bool any_brain = bv > 0;
        if (!any_brain) {  // quick look at the fine voxel at the centre
          const bool in = c[0] >= 0 && c[1] >= 0 && c[2] >= 0 && c[0] < better.dim[0] &&
                          c[1] < better.dim[1] && c[2] < better.dim[2];
          if (!in || better.at(c[0], c[1], c[2]) <= 0) continue;
        }
        for (int dz = 1 - r; dz < r; ++dz)  // the tent is 0 at +-r
          for (int dy = 1 - r; dy < r; ++dy)
            for (int dx = 1 - r; dx < r; ++dx) {
              const int64_t x = c[0] + dx, y = c[1] + dy, z = c[2] + dz;
              const float w = w1[static_cast<size_t>(dx + r)] * w1[static_cast<size_t>(dy + r)] *
                              w1[static_cast<size_t>(dz + r)];
              float v = 0;
              if (x >= 0 && y >= 0 && z >= 0 && x < better.dim[0] && y < better.dim[1] &&
                  z < better.dim[2])
                v = better.at(x, y, z);
              wsum += w;
              if (v > 0) {
                any_brain = true;
                const float fw = wm_fraction(v, gm_mean, wm_mean);
                wm += w * fw;
                gm += w * (1 - fw);
              } else {
                csf += w;
              }
            }
        if (!any_brain) continue;
        const int64_t vox = g.index(i, j, k);
        if (bv <= 0) {  // outside the bet mask: only the tissue the fine image has, no CSF
          csf = 0;
        }
        full.at(vox, kCsf) = csf / wsum;
        full.at(vox, kGm) = gm / wsum;
        full.at(vox, kWm) = wm / wsum;
      }
  // Brain mask, bounding box, depth.
  const int64_t n = g.n_voxels();
  std::vector<uint8_t> inside(static_cast<size_t>(n));
  std::array<int64_t, 3> lo{g.dim[0], g.dim[1], g.dim[2]}, hi{0, 0, 0};
  for (int64_t k = 0; k < g.dim[2]; ++k)
    for (int64_t j = 0; j < g.dim[1]; ++j)
      for (int64_t i = 0; i < g.dim[0]; ++i) {
        const int64_t v = g.index(i, j, k);
        const float b = full.at(v, kCsf) + full.at(v, kGm) + full.at(v, kWm);
        if (b > 0.5f) {
          inside[static_cast<size_t>(v)] = 1;
          lo = {std::min(lo[0], i), std::min(lo[1], j), std::min(lo[2], k)};
          hi = {std::max(hi[0], i + 1), std::max(hi[1], j + 1), std::max(hi[2], k + 1)};
        }
      }
  if (hi[0] <= lo[0]) throw Error(t.source, "the Colin27 template has no brain voxels");
  std::vector<float> depth = chamfer_distance(g.dim, g.spacing, inside);
  // Ventricles: deep, central CSF (MNI: lateral ventricles lie within |x| < 28, -50 < y < 35,
  // -12 < z < 32 mm).
  std::vector<uint8_t> not_vent(static_cast<size_t>(n), 1);
  for (int64_t k = 0; k < g.dim[2]; ++k)
    for (int64_t j = 0; j < g.dim[1]; ++j)
      for (int64_t i = 0; i < g.dim[0]; ++i) {
        const int64_t v = g.index(i, j, k);
        const Vec3 p = g.position(i, j, k);
        full.at(v, kDepth) = depth[static_cast<size_t>(v)];
        const bool central =
            std::abs(p[0]) < 28 && p[1] > -50 && p[1] < 35 && p[2] > -12 && p[2] < 32;
        if (central && depth[static_cast<size_t>(v)] > 12 && full.at(v, kCsf) > 0.3f) {
          full.at(v, kVent) = full.at(v, kCsf);
          if (full.at(v, kCsf) > 0.5f) not_vent[static_cast<size_t>(v)] = 0;
        }
      }
  std::vector<float> dvent = chamfer_distance(g.dim, g.spacing, not_vent);
  for (int64_t v = 0; v < n; ++v) {
    const float d = dvent[static_cast<size_t>(v)];
    if (d > 0 && d < 15) full.at(v, kPeriv) = full.at(v, kWm) * std::exp(-d / 4.f);
  }
  // Crop to the brain with a margin.
  std::array<int64_t, 3> clo, chi;
  for (int a = 0; a < 3; ++a) {
    clo[a] = std::max<int64_t>(0, lo[a] - 3);
    chi[a] = std::min<int64_t>(g.dim[a], hi[a] + 3);
  }
  Grid cg = g.crop(clo, chi);
  t.tissue = Field(cg, kNumTissueChannels);
  for (int64_t k = 0; k < cg.dim[2]; ++k)
    for (int64_t j = 0; j < cg.dim[1]; ++j)
      for (int64_t i = 0; i < cg.dim[0]; ++i) {
        const float* src = &full.v[static_cast<size_t>(g.index(i + clo[0], j + clo[1], k + clo[2]) *
                                                       kNumTissueChannels)];
        float* dst = &t.tissue.v[static_cast<size_t>(cg.index(i, j, k) * kNumTissueChannels)];
        std::copy(src, src + kNumTissueChannels, dst);
      }
  for (int a = 0; a < 3; ++a) {
    t.brain_lo[a] = g.origin[a] + g.spacing * lo[a];
    t.brain_hi[a] = g.origin[a] + g.spacing * (hi[a] - 1);
  }
  return t;
}

TissueTemplate load_colin27(const std::string& dir) {
  const std::string bet = (std::filesystem::path(dir) / "ch2bet.nii.gz").string();
  const std::string better = (std::filesystem::path(dir) / "ch2better.nii.gz").string();
  for (const auto& f : {bet, better})
    if (!std::filesystem::exists(f))
      throw Error(f, "the Colin27 brain template is missing",
                  "install Debian's mricron-data package (sudo apt-get install mricron-data), or "
                  "point --templates at a folder holding ch2bet.nii.gz and ch2better.nii.gz");
  TissueTemplate t = build_template(read_volume(bet), read_volume(better));
  t.source = bet + " + " + better;
  return t;
}

TissueTemplate downsample_template(const TissueTemplate& t, int factor) {
  if (factor <= 1) return t;
  TissueTemplate out = t;
  out.tissue = downsample_box(t.tissue, factor);
  return out;
}

}  // namespace kdseg::synth
