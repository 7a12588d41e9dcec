#include "kdseg/synth/case_generator.h"

#include <algorithm>
#include <cmath>

#include "kdseg/io/orientation.h"
#include "kdseg/synth/mr_signal.h"
#include "kdseg/synth/rng.h"
#include "kdseg/synth/tumour_growth.h"
#include "kdseg/synth/warp.h"
#include "kdseg/util/error.h"

namespace kdseg::synth {

namespace {

constexpr double kFovMm[3] = {240, 240, 155};

inline float clamp01(float x) {
  return x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
}

// Voxel index range [lo, hi) of grid `g` covering the mm box [a, b].
void box_on_grid(const Grid& g, const Vec3& a, const Vec3& b, std::array<int64_t, 3>& lo,
                 std::array<int64_t, 3>& hi) {
  for (int i = 0; i < 3; ++i) {
    lo[i] =
        std::max<int64_t>(0, static_cast<int64_t>(std::floor((a[i] - g.origin[i]) / g.spacing)));
    hi[i] = std::min<int64_t>(
        g.dim[i], static_cast<int64_t>(std::ceil((b[i] - g.origin[i]) / g.spacing)) + 1);
    if (hi[i] < lo[i]) hi[i] = lo[i];
  }
}

TissueMR jitter(const TissueMR& t, Rng& rng, double rel) {
  return {t.t1_ms * rng.uniform(1 - rel, 1 + rel), t.t2_ms * rng.uniform(1 - rel, 1 + rel),
          t.pd * rng.uniform(1 - rel / 2, 1 + rel / 2)};
}

nlohmann::json mr_json(const TissueMR& t) {
  return {t.t1_ms, t.t2_ms, t.pd};
}

// A uint8 fraction field (x 1/255) on a grid: the thin mimic structures, 4x smaller than floats.
struct Raster {
  Grid grid;
  std::vector<uint8_t> v;
  explicit Raster(const Grid& g) : grid(g), v(static_cast<size_t>(g.n_voxels()), 0) {}
  float get(int64_t i) const { return v[static_cast<size_t>(i)] * (1.f / 255.f); }
  // Soft sphere, weight `amp` inside radius r, partial volume over one voxel at the edge (max).
  void splat_sphere(const Vec3& c, double r, float amp = 1.f) {
    const double s = grid.spacing;
    std::array<int64_t, 3> lo, hi;
    box_on_grid(grid, {c[0] - r - s, c[1] - r - s, c[2] - r - s},
                {c[0] + r + s, c[1] + r + s, c[2] + r + s}, lo, hi);
    for (int64_t k = lo[2]; k < hi[2]; ++k)
      for (int64_t j = lo[1]; j < hi[1]; ++j)
        for (int64_t i = lo[0]; i < hi[0]; ++i) {
          const Vec3 p = grid.position(i, j, k);
          const double d = std::sqrt((p[0] - c[0]) * (p[0] - c[0]) + (p[1] - c[1]) * (p[1] - c[1]) +
                                     (p[2] - c[2]) * (p[2] - c[2]));
          const float w = amp * clamp01(static_cast<float>((r - d) / s + 0.5));
          uint8_t& dst = v[static_cast<size_t>(grid.index(i, j, k))];
          dst = std::max(dst, static_cast<uint8_t>(std::lround(w * 255.f)));
        }
  }
};

}  // namespace

Grid brats_grid(int s) {
  Grid g;
  g.spacing = s;
  for (int a = 0; a < 3; ++a) g.dim[a] = static_cast<int64_t>(std::llround(kFovMm[a] / s));
  g.origin = {-239.5 + 0.5 * s, -0.5 + 0.5 * s, -0.5 + 0.5 * s};
  return g;
}

Mat44 brats_file_affine(int s) {
  const Grid g = brats_grid(s);
  Mat44 m{};
  m[0] = {-static_cast<double>(s), 0, 0, -239.5 + (g.dim[0] - 0.5) * s};
  m[1] = {0, -static_cast<double>(s), 0, -0.5 + (g.dim[1] - 0.5) * s};
  m[2] = {0, 0, static_cast<double>(s), -0.5 + 0.5 * s};
  m[3] = {0, 0, 0, 1};
  return m;
}

template <class T>
void set_brats_geometry(Image<T>& img, int s, int32_t datatype) {
  const Grid g = brats_grid(s);
  const Mat44 m = brats_file_affine(s);
  img.dim = g.dim;
  img.spacing = {static_cast<double>(s), static_cast<double>(s), static_cast<double>(s)};
  img.source = make_header(g.dim, m, img.n_channels, datatype);
  img.source.descrip = std::string("kdseg synthetic cohort ") + kGeneratorVersion;
  img.to_canonical = axis_map_to_ras(m);
}
template void set_brats_geometry(Image<float>&, int, int32_t);
template void set_brats_geometry(Image<uint8_t>&, int, int32_t);

CohortAnatomy prepare_anatomy(const TissueTemplate& t1, int spacing) {
  if (spacing < 1 || spacing > 4)
    throw Error("--spacing", "spacing " + std::to_string(spacing) + " mm is not supported",
                "use 1 (the BraTS grid), 2 or 3 (coarser volumes for CPU-sized experiments)");
  CohortAnatomy a;
  a.spacing_mm = spacing;
  a.growth_spacing_mm = std::max(spacing, 2);
  a.output = downsample_template(t1, spacing);
  a.growth =
      a.growth_spacing_mm == spacing ? a.output : downsample_template(t1, a.growth_spacing_mm);
  return a;
}

std::string tumour_kind(const nlohmann::json& params) {
  const nlohmann::json& t = params.at("tumour");
  if (!t.at("enhancing").get<bool>()) return "non-enhancing";
  return t.at("multifocal").get<bool>() ? "multifocal" : "enhancing";
}

std::vector<std::string> stratified_kinds(int n) {
  if (n <= 0) return {};
  // Shares of the generator: enhancing unifocal 0.8 x 0.85, non-enhancing 0.2, multifocal
  // (enhancing) 0.8 x 0.15; each at least once where there is room.
  const double share[3] = {0.68, 0.2, 0.12};
  int count[3] = {0, 0, 0};
  for (int k : {0, 1, 2})
    if (count[0] + count[1] + count[2] < n) count[k] = 1;
  for (int k : {1, 2}) {
    const int want = static_cast<int>(std::lround(share[k] * n));
    while (count[k] < want && count[0] + count[1] + count[2] < n) ++count[k];
  }
  count[0] = n - count[1] - count[2];
  // Interleaved: at each position the kind furthest behind its share of the cases so far.
  std::vector<std::string> out;
  int used[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i) {
    int best = -1;
    double best_lag = 0;
    for (int k = 0; k < 3; ++k) {
      if (used[k] >= count[k]) continue;
      const double lag = (used[k] + 0.5) / count[k];
      if (best < 0 || lag < best_lag) best = k, best_lag = lag;
    }
    ++used[best];
    out.emplace_back(kTumourKinds[best]);
  }
  return out;
}

SynthCase generate_case(const CohortAnatomy& anat, const CaseSpec& spec) {
  using nlohmann::json;
  SynthCase out;
  out.id = spec.id;
  json& P = out.params;
  P["id"] = spec.id;
  P["split"] = spec.split;
  P["index"] = spec.index;
  P["seed"] = spec.seed;
  if (!spec.kind.empty()) P["stratified_kind"] = spec.kind;

  Rng rng(spec.seed);
  Rng r_warp = rng.split(), r_tum = rng.split(), r_mr = rng.split(), r_mim = rng.split(),
      r_tex = rng.split(), r_noise = rng.split();

  // ------------------------------------------------------------------ geometry
  const int s = anat.spacing_mm, gs = anat.growth_spacing_mm;
  const Grid G = brats_grid(s);
  const TissueTemplate& T = anat.output;
  WarpParams wp = random_warp_params(r_warp);
  const double ext_z = T.brain_hi[2] - T.brain_lo[2] + 1;
  wp.scale[2] = std::min(wp.scale[2], (kFovMm[2] - 6) / ext_z);  // keep the brain inside
  Vec3 tc{}, oc{};
  for (int a = 0; a < 3; ++a) {
    tc[a] = 0.5 * (T.brain_lo[a] + T.brain_hi[a]);
    oc[a] = G.origin[a] + 0.5 * s * (G.dim[a] - 1);
  }
  const Vec3 fov_lo = G.origin;
  const Vec3 fov_hi{G.origin[0] + s * (G.dim[0] - 1), G.origin[1] + s * (G.dim[1] - 1),
                    G.origin[2] + s * (G.dim[2] - 1)};
  CaseTransform xf(wp, tc, oc, fov_lo, fov_hi, r_warp);
  P["warp"] = {{"scale", wp.scale},
               {"rotation_deg", wp.rotation_deg},
               {"flip_lr", wp.flip_lr},
               {"shift_mm", wp.shift_mm},
               {"coarse_sd_mm", wp.coarse_mm},
               {"coarse_ctrl_mm", wp.coarse_ctrl_mm},
               {"fine_sd_mm", wp.fine_mm},
               {"fine_ctrl_mm", wp.fine_ctrl_mm}};
  // Output-space box of the brain: map a coarse 4 mm grid of the whole field of view and keep
  // where there is brain, plus a margin.
  Vec3 blo{1e9, 1e9, 1e9}, bhi{-1e9, -1e9, -1e9};
  {
    Grid c4;
    c4.spacing = 4;
    for (int a = 0; a < 3; ++a) {
      c4.dim[a] = static_cast<int64_t>(std::ceil(kFovMm[a] / 4)) + 1;
      c4.origin[a] = G.origin[a];
    }
    const Field d4 = xf.displacement_on(c4);
    for (int64_t k = 0; k < c4.dim[2]; ++k)
      for (int64_t j = 0; j < c4.dim[1]; ++j)
        for (int64_t i = 0; i < c4.dim[0]; ++i) {
          const int64_t v = c4.index(i, j, k);
          const Vec3 x = c4.position(i, j, k);
          Vec3 p = xf.affine(x);
          for (int a = 0; a < 3; ++a) p[a] += d4.at(v, a);
          float t[kNumTissueChannels];
          T.tissue.sample(p, t);
          if (t[kCsf] + t[kGm] + t[kWm] > 0.01f)
            for (int a = 0; a < 3; ++a) {
              blo[a] = std::min(blo[a], x[a]);
              bhi[a] = std::max(bhi[a], x[a]);
            }
        }
    for (int a = 0; a < 3; ++a) {
      blo[a] -= 4 + 2 * gs;
      bhi[a] += 4 + 2 * gs;
    }
  }

  // ------------------------------------------------------------------ tumour growth grid
  Grid GG = G;
  if (gs != s) {
    GG.spacing = gs;
    for (int a = 0; a < 3; ++a) {
      GG.dim[a] = static_cast<int64_t>(std::ceil(kFovMm[a] / gs));
      GG.origin[a] = G.origin[a] + 0.5 * (gs - s);
    }
  }
  std::array<int64_t, 3> glo, ghi;
  box_on_grid(GG, blo, bhi, glo, ghi);
  const Grid GB = GG.crop(glo, ghi);
  Field gtis(GB, kNumTissueChannels);
  // The non-rigid displacement, kept on the growth grid: it is smooth (control points >= 16 mm
  // apart), so trilinear interpolation from 2 mm is exact to a small fraction of a mm.
  const Field disp = xf.displacement_on(GB);
  for (int64_t k = 0; k < GB.dim[2]; ++k)
    for (int64_t j = 0; j < GB.dim[1]; ++j)
      for (int64_t i = 0; i < GB.dim[0]; ++i) {
        const int64_t v = GB.index(i, j, k);
        Vec3 p = xf.affine(GB.position(i, j, k));
        for (int a = 0; a < 3; ++a) p[a] += disp.at(v, a);
        anat.growth.tissue.sample(p, &gtis.v[static_cast<size_t>(v * kNumTissueChannels)]);
      }
  // Tumour parameters.
  GrowthParams gp;
  bool enhancing = r_tum.bernoulli(0.8);
  bool multifocal = r_tum.bernoulli(0.15);
  if (!spec.kind.empty()) {  // a stratified split's case: its kind is given, the rest drawn
    if (spec.kind != "enhancing" && spec.kind != "non-enhancing" && spec.kind != "multifocal")
      throw Error(spec.id, "unknown tumour kind \"" + spec.kind + "\"");
    enhancing = spec.kind != "non-enhancing";
    multifocal = spec.kind == "multifocal";
  }
  const bool necrotic = enhancing && r_tum.bernoulli(0.85);
  gp.rho_per_day = r_tum.uniform(0.03, 0.08);
  gp.infiltration_mm = r_tum.uniform(3, 7);
  const double wm_gm_ratio = r_tum.uniform(3, 10);
  const double u_edge = r_tum.uniform(0.06, 0.2);  // oedema boundary (T2/FLAIR abnormality)
  gp.u_core = r_tum.uniform(0.45, 0.8);            // tumour core boundary
  // Grown until the core reaches its size; the oedema around it then spans a few mL (small
  // cores, little infiltration) to a few hundred mL, as in BraTS.
  gp.u_visible = gp.u_core;
  gp.target_ml = r_tum.log_uniform(1.5, 60);
  const double rim_mm = r_tum.uniform(2, 6);
  const double mass_k = r_tum.uniform(0.2, 0.8);
  const double front_speed = 2 * gp.infiltration_mm * gp.rho_per_day;  // 2 sqrt(D_wm rho)
  const double tau_nec = necrotic ? rim_mm / front_speed : 1e30;
  std::vector<float> dif(static_cast<size_t>(GB.n_voxels()));
  std::vector<int64_t> cand, surf, deep, vent, wmc;
  for (int64_t v = 0; v < GB.n_voxels(); ++v) {
    const float* t = &gtis.v[static_cast<size_t>(v * kNumTissueChannels)];
    dif[static_cast<size_t>(v)] = t[kWm] + t[kGm] / static_cast<float>(wm_gm_ratio);
    if (t[kWm] > 0.6f && t[kDepth] > 15.f && t[kVent] < 0.05f && t[kCsf] < 0.1f) {
      // Supratentorial, as most adult gliomas (BraTS): not in the cerebellum or brainstem
      // (MNI: below z = -5 mm and behind y = -38 mm; the midline below z = 0 between y = -45
      // and -5).
      Vec3 q = xf.affine(
          GB.position(v % GB.dim[0], (v / GB.dim[0]) % GB.dim[1], v / (GB.dim[0] * GB.dim[1])));
      for (int a = 0; a < 3; ++a) q[a] += disp.at(v, a);
      const bool cerebellum = q[2] < -5 && q[1] < -38;
      const bool brainstem = std::abs(q[0]) < 16 && q[2] < 0 && q[1] > -45 && q[1] < -5;
      if (!cerebellum && !brainstem) cand.push_back(v);
    }
    // Where the mimics go (drawn later).
    if (t[kCsf] + t[kGm] + t[kWm] < 0.5f) continue;
    if (t[kDepth] < 8 && t[kCsf] > 0.25f) surf.push_back(v);
    if (t[kDepth] > 8 && t[kCsf] > 0.4f && t[kVent] < 0.1f) deep.push_back(v);
    if (t[kVent] > 0.5f) vent.push_back(v);
    if (t[kWm] > 0.7f && t[kDepth] > 10) wmc.push_back(v);
  }
  if (cand.empty()) throw Error(spec.id, "no white matter to seed a tumour in (template broken?)");
  auto vox_pos = [&](int64_t v) {
    const int64_t i = v % GB.dim[0], j = (v / GB.dim[0]) % GB.dim[1],
                  k = v / (GB.dim[0] * GB.dim[1]);
    return GB.position(i, j, k);
  };
  gp.seeds.push_back(
      vox_pos(cand[static_cast<size_t>(r_tum.below(static_cast<int64_t>(cand.size())))]));
  gp.seed_delay_days.push_back(0);
  if (multifocal) {
    const int extra = 1 + static_cast<int>(r_tum.below(2));
    const double r_target = std::cbrt(3 * 4 * gp.target_ml * 1000 / (4 * M_PI));  // ~WT size
    const double t_est = r_target / front_speed;
    for (int e = 0; e < extra; ++e) {
      std::vector<int64_t> near;
      for (int64_t v : cand) {
        const Vec3 p = vox_pos(v);
        const double d = std::sqrt((p[0] - gp.seeds[0][0]) * (p[0] - gp.seeds[0][0]) +
                                   (p[1] - gp.seeds[0][1]) * (p[1] - gp.seeds[0][1]) +
                                   (p[2] - gp.seeds[0][2]) * (p[2] - gp.seeds[0][2]));
        if (d > 15 && d < 45) near.push_back(v);
      }
      if (near.empty()) break;
      gp.seeds.push_back(
          vox_pos(near[static_cast<size_t>(r_tum.below(static_cast<int64_t>(near.size())))]));
      gp.seed_delay_days.push_back(r_tum.uniform(0, 0.4) * t_est);
    }
  }
  GrowthResult gr = grow_tumour(GB, dif, gp);
  // Core centroid and volume (for the mass effect), and the box holding the tumour.
  Vec3 cc{0, 0, 0};
  double n_core = 0;
  Vec3 tlo{1e9, 1e9, 1e9}, thi{-1e9, -1e9, -1e9};
  for (int64_t v = 0; v < GB.n_voxels(); ++v) {
    const float u = gr.u.v[static_cast<size_t>(v)];
    if (u <= 0.005f) continue;
    const Vec3 p = vox_pos(v);
    for (int a = 0; a < 3; ++a) {
      tlo[a] = std::min(tlo[a], p[a] - gs);
      thi[a] = std::max(thi[a], p[a] + gs);
    }
    if (u > gp.u_core) {
      for (int a = 0; a < 3; ++a) cc[a] += p[a];
      n_core += 1;
    }
  }
  MassEffect me;
  if (n_core > 0) {
    for (int a = 0; a < 3; ++a) me.centre[a] = cc[a] / n_core;
    me.displaced_ml = mass_k * n_core * gs * gs * gs / 1000.0;
  }
  json seeds = json::array();
  for (size_t i = 0; i < gp.seeds.size(); ++i)
    seeds.push_back({{"mm", gp.seeds[i]}, {"delay_days", gp.seed_delay_days[i]}});
  P["tumour"] = {{"enhancing", enhancing},
                 {"multifocal", gp.seeds.size() > 1},
                 {"necrotic", necrotic},
                 {"seeds", seeds},
                 {"rho_per_day", gp.rho_per_day},
                 {"infiltration_mm", gp.infiltration_mm},
                 {"wm_gm_diffusion_ratio", wm_gm_ratio},
                 {"u_edge", u_edge},
                 {"u_core", gp.u_core},
                 {"target_core_ml", gp.target_ml},
                 {"rim_mm", rim_mm},
                 {"days", gr.days},
                 {"steps", gr.steps},
                 {"growth_spacing_mm", gs},
                 {"mass_effect_ml", me.displaced_ml}};

  // ------------------------------------------------------------------ output box
  std::array<int64_t, 3> olo, ohi;
  box_on_grid(G, blo, bhi, olo, ohi);
  const Grid OB = G.crop(olo, ohi);
  const int64_t nb = OB.n_voxels();

  // ------------------------------------------------------------------ mimics
  // Rasterised as uint8 fractions (x 1/255) on the output box.
  Raster vessel(OB), choroid(OB), wmh(OB);
  // Vessels: cortical veins along the surface and a few deep ones, bright on T1ce only.
  const int n_vessels = 15 + static_cast<int>(r_mim.below(31));
  double vessel_len = 0;
  for (int vi = 0; vi < n_vessels; ++vi) {
    const bool is_surface = r_mim.bernoulli(0.8) || deep.empty();
    const auto& pool = is_surface ? surf : deep;
    if (pool.empty()) break;
    Vec3 p = vox_pos(pool[static_cast<size_t>(r_mim.below(static_cast<int64_t>(pool.size())))]);
    const bool big = vi < 4;  // sinuses and large veins
    const double radius = big ? r_mim.uniform(1.5, 3.0) : r_mim.uniform(0.5, 1.3);
    const double length = big ? r_mim.uniform(40, 120) : r_mim.uniform(15, 60);
    Vec3 dir{r_mim.normal(), r_mim.normal(), r_mim.normal()};
    const double step = std::min(0.5 * s, 1.0);
    for (double l = 0; l < length; l += step) {
      vessel.splat_sphere(p, radius);
      vessel_len += step;
      for (int a = 0; a < 3; ++a) dir[a] += 0.15 * r_mim.normal();
      double nrm = std::sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]) + 1e-9;
      for (auto& c : dir) c /= nrm;
      Vec3 q{p[0] + step * dir[0], p[1] + step * dir[1], p[2] + step * dir[2]};
      float tq[kNumTissueChannels];
      gtis.sample(q, tq);
      const float bq = tq[kCsf] + tq[kGm] + tq[kWm];
      if (bq < 0.5f || (is_surface && tq[kDepth] > 10)) {  // turn back into the allowed zone
        for (auto& c : dir) c = -c + 0.5 * r_mim.normal();
        continue;
      }
      p = q;
    }
  }
  // Choroid plexus: a blob in each atrium (posterior lateral ventricle), bright on T1ce.
  if (!vent.empty()) {
    Vec3 vc{0, 0, 0};
    for (int64_t v : vent) {
      const Vec3 q = vox_pos(v);
      for (int a = 0; a < 3; ++a) vc[a] += q[a] / static_cast<double>(vent.size());
    }
    for (int side = 0; side < 2; ++side) {
      std::vector<int64_t> c;
      for (int64_t v : vent) {
        const Vec3 q = vox_pos(v);
        if (q[1] < vc[1] - 5 && (side == 0 ? q[0] < vc[0] - 5 : q[0] > vc[0] + 5)) c.push_back(v);
      }
      if (c.empty()) continue;
      choroid.splat_sphere(
          vox_pos(c[static_cast<size_t>(r_mim.below(static_cast<int64_t>(c.size())))]),
          r_mim.uniform(3, 6));
    }
  }
  // White-matter hyperintensities: periventricular caps (template) and scattered lesions,
  // bright on FLAIR and T2, never labelled.
  const double cap_strength = r_mim.bernoulli(0.9) ? r_mim.uniform(0.4, 1.0) : 0.0;
  // CSF inflow / pulsation artefacts: ventricular CSF not nulled on FLAIR in patches.
  const double flair_csf_artefact = r_mim.uniform(0.0, 0.8);
  const int n_lesions = static_cast<int>(r_mim.below(61));
  for (int l = 0; l < n_lesions && !wmc.empty(); ++l)
    wmh.splat_sphere(
        vox_pos(wmc[static_cast<size_t>(r_mim.below(static_cast<int64_t>(wmc.size())))]),
        r_mim.uniform(1.5, 8), static_cast<float>(r_mim.uniform(0.5, 1.0)));
  P["mimics"] = {{"vessels", n_vessels},
                 {"vessel_length_mm", vessel_len},
                 {"periventricular_caps", cap_strength},
                 {"wm_lesions", n_lesions},
                 {"flair_csf_artefact", flair_csf_artefact}};

  // ------------------------------------------------------------------ MR appearance
  const Sequences seq = random_sequences(r_mr);
  enum Comp { cCsf, cGm, cWm, cEd, cTum, cNec, cVes, cCp, cWmh, kNComp };
  std::array<TissueMR, kNComp> mr;
  mr[cCsf] = jitter(kCsfMR, r_mr, 0.05);
  mr[cGm] = jitter(kGmMR, r_mr, 0.05);
  mr[cWm] = jitter(kWmMR, r_mr, 0.05);
  // Pathology and mimics: typical 1.5 T ranges from the glioma relaxometry literature.
  mr[cEd] = {r_mr.uniform(900, 1500), r_mr.uniform(100, 300), r_mr.uniform(0.82, 0.95)};
  mr[cTum] = {r_mr.uniform(950, 1250), r_mr.uniform(100, 160), r_mr.uniform(0.84, 0.92)};
  mr[cNec] = {r_mr.uniform(1500, 2500), r_mr.uniform(180, 400), r_mr.uniform(0.9, 1.0)};
  mr[cVes] = {1350, r_mr.uniform(60, 120), 0.85};
  mr[cCp] = {r_mr.uniform(850, 1000), r_mr.uniform(90, 130), 0.85};
  mr[cWmh] = {r_mr.uniform(750, 1000), r_mr.uniform(100, 180), 0.84};
  const double gd_tum = enhancing ? r_mr.uniform(0.25, 0.9) : 0.02;  // mM
  const double gd_ed = r_mr.uniform(0.0, 0.05), gd_ves = r_mr.uniform(1.5, 4.0),
               gd_cp = r_mr.uniform(1.0, 3.0);
  const double vessel_void = r_mr.uniform(0.2, 0.5);  // flow void on spin-echo sequences
  std::array<std::array<float, kNComp>, kNumModalities> S{};
  for (int m = 0; m < kNumModalities; ++m)
    for (int c = 0; c < kNComp; ++c) {
      double gd = 0;
      if (c == cEd) gd = gd_ed;
      if (c == cVes) gd = gd_ves;
      if (c == cCp) gd = gd_cp;
      if (c == cTum) gd = gd_tum;
      double sig = mr_signal(static_cast<Modality>(m), seq, mr[static_cast<size_t>(c)], gd);
      if (c == cVes && (m == kT2 || m == kFlair)) sig *= vessel_void;
      S[static_cast<size_t>(m)][static_cast<size_t>(c)] = static_cast<float>(sig);
    }
  std::array<double, kNumModalities> gain{}, noise{}, bias_sd{};
  for (int m = 0; m < kNumModalities; ++m) {
    gain[static_cast<size_t>(m)] = std::exp(r_mr.normal(0, 0.25));
    noise[static_cast<size_t>(m)] = r_mr.uniform(0.015, 0.05);
    bias_sd[static_cast<size_t>(m)] = r_mr.uniform(0.05, 0.2);
  }
  const double tex_tissue = r_mr.uniform(0.02, 0.05), tex_tumour = r_mr.uniform(0.06, 0.15);
  const double het_gd = r_mr.uniform(0.3, 0.7);
  P["sequences"] = {
      {"t1",
       {{"type", "spgr"}, {"tr_ms", seq.t1_tr}, {"te_ms", seq.t1_te}, {"flip_deg", seq.t1_flip}}},
      {"t1ce",
       {{"type", "spgr"},
        {"tr_ms", seq.t1ce_tr},
        {"te_ms", seq.t1ce_te},
        {"flip_deg", seq.t1ce_flip}}},
      {"t2", {{"type", "spin_echo"}, {"tr_ms", seq.t2_tr}, {"te_ms", seq.t2_te}}},
      {"flair",
       {{"type", "inversion_recovery"},
        {"tr_ms", seq.flair_tr},
        {"te_ms", seq.flair_te},
        {"ti_ms", seq.flair_ti}}}};
  P["tissue_t1_t2_pd"] = {{"csf", mr_json(mr[cCsf])},
                          {"gm", mr_json(mr[cGm])},
                          {"wm", mr_json(mr[cWm])},
                          {"oedema", mr_json(mr[cEd])},
                          {"tumour", mr_json(mr[cTum])},
                          {"necrosis", mr_json(mr[cNec])},
                          {"vessel", mr_json(mr[cVes])},
                          {"choroid_plexus", mr_json(mr[cCp])},
                          {"wm_hyperintensity", mr_json(mr[cWmh])}};
  P["gadolinium_mM"] = {{"tumour", gd_tum},
                        {"oedema", gd_ed},
                        {"vessel", gd_ves},
                        {"choroid_plexus", gd_cp},
                        {"heterogeneity", het_gd}};
  P["scanner"] = {{"gain", gain},
                  {"noise_fraction_of_wm", noise},
                  {"bias_sd", bias_sd},
                  {"texture_tissue", tex_tissue},
                  {"texture_tumour", tex_tumour}};

  // ------------------------------------------------------------------ voxels
  for (int m = 0; m < kNumModalities; ++m) {
    out.image[static_cast<size_t>(m)] = Volume{};
    out.image[static_cast<size_t>(m)].data.assign(static_cast<size_t>(G.n_voxels()), 0.f);
    set_brats_geometry(out.image[static_cast<size_t>(m)], s, kNiftiInt16);
  }
  out.labels.data.assign(static_cast<size_t>(G.n_voxels()), 0);
  set_brats_geometry(out.labels, s, kNiftiUInt8);
  out.tissue = out.labels;
  FastRng fr(r_noise.next());
  int64_t n_lab[5] = {0, 0, 0, 0, 0};
  const float w_ed = 0.4f, w_tc = 0.3f, w_nec = 0.4f;  // relative label-boundary jitter
  // Texture (4 mm), heterogeneity of enhancement and of the label boundaries (8 mm), bias
  // (70 mm): smooth random fields evaluated slice by slice.
  BSplineField tex_bs(fov_lo, fov_hi, 4.0, 2), het_bs(fov_lo, fov_hi, 8.0, 5),
      bias_bs(fov_lo, fov_hi, 70.0, 4);
  tex_bs.randomize(r_tex, 1.0, 3.0);
  het_bs.randomize(r_tex, 1.0, 3.0);
  bias_bs.randomize(r_tex, 1.0, 3.0);
  const BSplineSlicer tex_sl(tex_bs, OB), het_sl(het_bs, OB), bias_sl(bias_bs, OB);
  std::vector<float> tex(static_cast<size_t>(tex_sl.slice_size())),
      het(static_cast<size_t>(het_sl.slice_size())),
      bias(static_cast<size_t>(bias_sl.slice_size()));
  const double reach = me.reach(0.3);
  const int64_t plane = OB.dim[0] * OB.dim[1];
  (void)nb;
  for (int64_t k = 0; k < OB.dim[2]; ++k) {
    tex_sl.slice(k, tex.data());
    het_sl.slice(k, het.data());
    bias_sl.slice(k, bias.data());
    for (int64_t j = 0; j < OB.dim[1]; ++j)
      for (int64_t i = 0; i < OB.dim[0]; ++i) {
        const int64_t v = OB.index(i, j, k), vs = v - k * plane;
        const Vec3 x = OB.position(i, j, k);
        // Anatomy: where this voxel comes from in the template (mass effect, warp, affine).
        float t[kNumTissueChannels];
        float dxyz[3];
        disp.sample(x, dxyz, true);
        Vec3 p = xf.affine(x);
        for (int a = 0; a < 3; ++a) p[a] += dxyz[a];
        T.tissue.sample(p, t);
        if (t[kCsf] + t[kGm] + t[kWm] < 0.5f) continue;
        Vec3 y = x;
        const double r2 = (x[0] - me.centre[0]) * (x[0] - me.centre[0]) +
                          (x[1] - me.centre[1]) * (x[1] - me.centre[1]) +
                          (x[2] - me.centre[2]) * (x[2] - me.centre[2]);
        if (me.displaced_ml > 0 && r2 < reach * reach) {
          y = me.source_of(x, clamp01(t[kDepth] / 15.f));  // skull fixed
          disp.sample(y, dxyz, true);
          Vec3 q = xf.affine(y);
          for (int a = 0; a < 3; ++a) q[a] += dxyz[a];
          T.tissue.sample(q, t);
        }
        float u = 0, age = 0;
        if (y[0] >= tlo[0] && y[1] >= tlo[1] && y[2] >= tlo[2] && y[0] <= thi[0] &&
            y[1] <= thi[1] && y[2] <= thi[2]) {
          gr.u.sample(y, &u);
          if (u > 0.05f) gr.age_days.sample(y, &age);
        }
        float fc = t[kCsf], fg = t[kGm], fw = t[kWm];
        const float b = fc + fg + fw;
        const float* hv = &het[static_cast<size_t>(vs * 5)];
        const size_t gv = static_cast<size_t>(G.index(i + olo[0], j + olo[1], k + olo[2]));
        out.tissue.data[gv] = fw >= fg && fw >= fc ? 3 : (fg >= fc ? 2 : 1);
        // Mimics take their share of the healthy compartments.
        float f[kNComp] = {};
        const float wm_hyper = clamp01(
            static_cast<float>(cap_strength) * t[kPeriv] * (0.7f + 0.3f * hv[4]) + wmh.get(v));
        f[cWmh] = wm_hyper * fw;
        fw -= f[cWmh];
        const float cpw = choroid.get(v) * clamp01(2 * t[kVent]);
        f[cCp] = cpw * fc;
        fc -= f[cCp];
        const float ves = vessel.get(v);
        f[cCsf] = fc * (1 - ves);
        f[cGm] = fg * (1 - ves);
        f[cWm] = fw * (1 - ves);
        f[cWmh] *= (1 - ves);
        f[cCp] *= (1 - ves);
        f[cVes] = ves * b;
        // Tumour: soft weights around the label thresholds (partial volume at the boundaries).
        const float ued = static_cast<float>(u_edge) * std::max(0.3f, 1 + w_ed * hv[1]);
        const float utc = static_cast<float>(gp.u_core) * std::max(0.3f, 1 + w_tc * hv[2]);
        const float tnec = static_cast<float>(tau_nec) * std::max(0.3f, 1 + w_nec * hv[3]);
        uint8_t label = 0;
        if (u > 0.01f) {
          const float e = clamp01(0.5f + (u / ued - 1) / 0.6f);
          const float tcw = clamp01(0.5f + (u / utc - 1) / 0.3f);
          const float nw = necrotic ? tcw * clamp01(0.5f + (age / tnec - 1) / 0.4f) : 0.f;
          // Oedema fades outwards: the outer shell is only partly oedematous.
          const float strength = 0.15f + 0.85f * clamp01((u - ued) / std::max(1e-3f, utc - ued));
          const float ed = std::max(0.f, e - tcw) * strength;
          const float keep = std::max(0.f, 1 - tcw - ed);
          for (int c : {cCsf, cGm, cWm, cVes, cCp, cWmh}) f[c] *= keep;
          f[cEd] = ed * b;
          f[cTum] = (tcw - nw) * b;
          f[cNec] = nw * b;
          if (u > utc)
            label = (necrotic && age > tnec) ? 1 : (enhancing ? 4 : 1);
          else if (u > ued)
            label = 2;
        }
        out.labels.data[gv] = label;
        ++n_lab[label == 4 ? 3 : label];
        const float* tx = &tex[static_cast<size_t>(vs * 2)];
        const float t_tis = 1 + static_cast<float>(tex_tissue) * tx[0];
        const float t_tum = 1 + static_cast<float>(tex_tumour) * tx[1];
        const float gd_local =
            static_cast<float>(gd_tum) * std::max(0.2f, 1 + static_cast<float>(het_gd) * hv[0]);
        for (int m = 0; m < kNumModalities; ++m) {
          const auto& Sm = S[static_cast<size_t>(m)];
          float healthy = f[cCsf] * Sm[cCsf] + f[cGm] * Sm[cGm] + f[cWm] * Sm[cWm] +
                          f[cWmh] * Sm[cWmh] + f[cCp] * Sm[cCp] + f[cVes] * Sm[cVes];
          float tum_s = Sm[cTum];
          if (m == kT1ce && f[cTum] > 0 && enhancing)
            tum_s = static_cast<float>(mr_signal(kT1ce, seq, mr[cTum], gd_local));
          const float path = f[cEd] * Sm[cEd] + f[cTum] * tum_s + f[cNec] * Sm[cNec];
          float sig = healthy * t_tis + path * t_tum;
          if (m == kFlair && t[kVent] > 0.f)
            sig += f[cCsf] * clamp01(t[kVent] / std::max(t[kCsf], 1e-3f)) *
                   static_cast<float>(flair_csf_artefact) * Sm[cWm] * clamp01(0.3f + 0.7f * hv[4]);
          sig *= std::exp(static_cast<float>(bias_sd[static_cast<size_t>(m)]) *
                          bias[static_cast<size_t>(vs * 4 + m)]);
          const float sref = Sm[cWm];
          const float sd = static_cast<float>(noise[static_cast<size_t>(m)]) * sref;
          float n1, n2;
          fr.normal2(n1, n2);
          const float re = sig + sd * n1, im = sd * n2;
          float val = std::sqrt(re * re + im * im) *
                      static_cast<float>(1000.0 * gain[static_cast<size_t>(m)]) / sref;
          val = std::min(32000.f, std::max(1.f, std::nearbyint(val)));
          out.image[static_cast<size_t>(m)].data[gv] = val;
        }
      }
  }
  const double vml = s * s * s / 1000.0;
  P["volumes_ml"] = {{"ncr", n_lab[1] * vml},
                     {"ed", n_lab[2] * vml},
                     {"et", n_lab[3] * vml},
                     {"wt", (n_lab[1] + n_lab[2] + n_lab[3]) * vml},
                     {"tc", (n_lab[1] + n_lab[3]) * vml}};
  return out;
}

}  // namespace kdseg::synth
