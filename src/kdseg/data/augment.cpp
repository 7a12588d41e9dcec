#include "kdseg/data/augment.h"

#include <torch/torch.h>

#include <cmath>

#include "kdseg/data/random.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

constexpr double kPi = 3.14159265358979323846;

// The (K, size) box of t (K,D,H,W) starting at `lo` (may reach outside: zeros there).
at::Tensor extract_box(const at::Tensor& t, const std::array<int64_t, 3>& lo,
                       const std::array<int64_t, 3>& size) {
  at::Tensor out = torch::zeros({t.size(0), size[0], size[1], size[2]}, t.options());
  at::Tensor src = t, dst = out;
  for (int i = 0; i < 3; ++i) {
    const int64_t a = std::max<int64_t>(lo[i], 0), b = std::min(lo[i] + size[i], t.size(i + 1));
    if (b <= a) return out;
    src = src.slice(i + 1, a, b);
    dst = dst.slice(i + 1, a - lo[i], b - lo[i]);
  }
  dst.copy_(src);
  return out;
}

void check_probability(double p, const char* name) {
  if (!(p >= 0 && p <= 1))
    throw Error(std::string("augmentation ") + name,
                "probability must be in [0, 1], got " + std::to_string(p));
}

}  // namespace

void validate_augment(const AugmentOptions& o) {
  check_probability(o.p_scale, "p_scale");
  check_probability(o.p_rotate, "p_rotate");
  check_probability(o.p_mirror, "p_mirror");
  check_probability(o.p_shift, "p_shift");
  check_probability(o.p_contrast, "p_contrast");
  if (!(o.scale[0] > 0 && o.scale[0] <= o.scale[1]))
    throw Error("augmentation scale", "range must be 0 < lo <= hi, e.g. 0.9,1.1");
  if (!(o.contrast[0] > 0 && o.contrast[0] <= o.contrast[1]))
    throw Error("augmentation contrast", "range must be 0 < lo <= hi, e.g. 0.9,1.1");
  for (double a : o.rotate_deg)
    if (!(a >= 0 && a <= 180)) throw Error("augmentation rotate_deg", "must be in [0, 180]");
  if (!(o.shift >= 0)) throw Error("augmentation shift", "must be >= 0");
}

AugmentParams draw_augment(const AugmentOptions& opt, uint64_t key, int64_t n_channels) {
  // Every number is drawn whatever the probabilities, so that switching one augmentation off
  // leaves the others' draws unchanged.
  data::CounterRng r(key);
  AugmentParams a;
  const bool do_scale = r.bernoulli(opt.p_scale);
  const double s = r.uniform(opt.scale[0], opt.scale[1]);
  if (opt.enabled && do_scale) a.scale = s;
  const bool do_rotate = r.bernoulli(opt.p_rotate);
  for (int i = 0; i < 3; ++i) {
    const double angle = r.uniform(-opt.rotate_deg[i], opt.rotate_deg[i]) * kPi / 180;
    if (opt.enabled && do_rotate) a.angle[i] = angle;
  }
  for (int i = 0; i < 2; ++i) {
    const bool m = r.bernoulli(opt.p_mirror);
    a.mirror[i] = opt.enabled && m;
  }
  const bool do_shift = r.bernoulli(opt.p_shift), do_contrast = r.bernoulli(opt.p_contrast);
  for (int64_t c = 0; c < n_channels; ++c) {
    const double sh = r.uniform(-opt.shift, opt.shift);
    const double co = r.uniform(opt.contrast[0], opt.contrast[1]);
    if (opt.enabled && (do_shift || do_contrast)) {
      a.shift.push_back(do_shift ? sh : 0.0);
      a.contrast.push_back(do_contrast ? co : 1.0);
    }
  }
  return a;
}

std::array<double, 9> spatial_matrix(const AugmentParams& a, const std::array<double, 3>& sp) {
  auto mul = [](const std::array<double, 9>& x, const std::array<double, 9>& y) {
    std::array<double, 9> z{};
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 3; ++k) z[3 * i + j] += x[3 * i + k] * y[3 * k + j];
    return z;
  };
  auto rot = [](int axis, double t) {  // rotation in the plane of the two other axes
    std::array<double, 9> m{1, 0, 0, 0, 1, 0, 0, 0, 1};
    const int p = (axis + 1) % 3, q = (axis + 2) % 3;
    m[3 * p + p] = std::cos(t);
    m[3 * p + q] = -std::sin(t);
    m[3 * q + p] = std::sin(t);
    m[3 * q + q] = std::cos(t);
    return m;
  };
  std::array<double, 9> r = mul(rot(2, a.angle[2]), mul(rot(1, a.angle[1]), rot(0, a.angle[0])));
  std::array<double, 9> m{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const double flip = (j < 2 && a.mirror[j]) ? -1.0 : 1.0;
      m[3 * i + j] = r[3 * i + j] * sp[j] / sp[i] / a.scale * flip;
    }
  return m;
}

at::Tensor affine_resample(const at::Tensor& volume, const std::array<double, 3>& centre,
                           const std::array<double, 9>& m, const std::array<int64_t, 3>& patch) {
  // Normalised output coordinate u (align_corners = true) -> volume voxel p = centre + M h u,
  // h = (patch-1)/2 -> normalised input v = g p - 1, g = 2/(size-1). v = A u + b.
  double a[3][3], b[3];
  for (int i = 0; i < 3; ++i) {
    const double size = static_cast<double>(volume.size(i + 1));
    const double g = size > 1 ? 2.0 / (size - 1) : 0.0;
    for (int j = 0; j < 3; ++j) a[i][j] = g * m[3 * i + j] * (patch[j] - 1) / 2.0;
    b[i] = g * centre[i] - 1.0;
  }
  // grid_sample's coordinate k indexes the input's dims in reverse order (x = W, y = H, z = D).
  at::Tensor theta = torch::empty({1, 3, 4}, torch::kFloat64);
  auto th = theta.accessor<double, 3>();
  for (int k = 0; k < 3; ++k) {
    for (int l = 0; l < 3; ++l) th[0][k][l] = a[2 - k][2 - l];
    th[0][k][3] = b[2 - k];
  }
  at::Tensor x = volume.to(torch::kFloat32).unsqueeze(0);
  at::Tensor grid = at::affine_grid_generator(theta.to(torch::kFloat32),
                                              {1, x.size(1), patch[0], patch[1], patch[2]},
                                              /*align_corners=*/true);
  return at::grid_sampler(x, grid, /*interpolation bilinear*/ 0, /*padding zeros*/ 0,
                          /*align_corners=*/true)
      .squeeze(0);
}

Sample make_sample(const CachedCase& c, const SampleSpec& spec, const std::array<int64_t, 3>& patch,
                   const AugmentOptions& opt) {
  const int64_t n_ch = c.image().size(0);
  const AugmentParams a = draw_augment(opt, spec.augment_key, n_ch);
  const bool soft = c.soft().defined(), labelled = c.labels().defined();
  const bool has_ignore = c.ignore().defined();
  Sample s;
  if (a.spatial_identity()) {
    s.image = extract_box(c.image(), spec.corner, patch).to(torch::kFloat32);
    if (soft)
      s.target = extract_box(c.soft(), spec.corner, patch).to(torch::kFloat32).div_(255);
    else if (labelled)
      s.target = labels_to_regions(extract_box(c.labels().unsqueeze(0), spec.corner, patch)[0]);
    else
      s.target = torch::zeros({3, patch[0], patch[1], patch[2]}, torch::kFloat32);
    at::Tensor ignore;
    if (has_ignore) ignore = extract_box(c.ignore().unsqueeze(0), spec.corner, patch);
    std::vector<int64_t> flip;
    for (int i = 0; i < 2; ++i)
      if (a.mirror[i]) flip.push_back(i + 1);
    if (!flip.empty()) {
      s.image = s.image.flip(flip);
      s.target = s.target.flip(flip);
      if (has_ignore) ignore = ignore.flip(flip);
    }
    if (has_ignore) s.weight = 1.0f - (ignore != 0).to(torch::kFloat32);
  } else {
    const auto m = spatial_matrix(a, c.geometry().spacing);
    std::array<double, 3> centre{}, lo_f{1e300, 1e300, 1e300}, hi_f{-1e300, -1e300, -1e300};
    for (int i = 0; i < 3; ++i) centre[i] = spec.corner[i] + (patch[i] - 1) / 2.0;
    for (int corner = 0; corner < 8; ++corner) {
      double o[3];
      for (int j = 0; j < 3; ++j) o[j] = ((corner >> j) & 1 ? 1.0 : -1.0) * (patch[j] - 1) / 2.0;
      for (int i = 0; i < 3; ++i) {
        const double p = centre[i] + m[3 * i] * o[0] + m[3 * i + 1] * o[1] + m[3 * i + 2] * o[2];
        lo_f[i] = std::min(lo_f[i], p);
        hi_f[i] = std::max(hi_f[i], p);
      }
    }
    std::array<int64_t, 3> lo{}, size{};
    std::array<double, 3> local{};
    for (int i = 0; i < 3; ++i) {
      lo[i] = static_cast<int64_t>(std::floor(lo_f[i])) - 1;
      size[i] = static_cast<int64_t>(std::ceil(hi_f[i])) + 2 - lo[i];
      local[i] = centre[i] - lo[i];
    }
    std::vector<at::Tensor> parts{extract_box(c.image(), lo, size).to(torch::kFloat32)};
    if (soft)
      parts.push_back(extract_box(c.soft(), lo, size).to(torch::kFloat32).div_(255));
    else if (labelled)
      parts.push_back(labels_to_regions(extract_box(c.labels().unsqueeze(0), lo, size)[0]));
    if (has_ignore)
      parts.push_back(extract_box(c.ignore().unsqueeze(0), lo, size).to(torch::kFloat32));
    at::Tensor out = affine_resample(torch::cat(parts, 0), local, m, patch);  // one pass
    s.image = out.slice(0, 0, n_ch);
    if (soft)
      s.target = out.slice(0, n_ch, n_ch + 3).clamp(0, 1);
    else if (labelled)
      s.target = (out.slice(0, n_ch, n_ch + 3) >= 0.5f).to(torch::kFloat32);
    else
      s.target = torch::zeros({3, patch[0], patch[1], patch[2]}, torch::kFloat32);
    if (has_ignore) s.weight = 1.0f - (out.slice(0, out.size(0) - 1) >= 0.5f).to(torch::kFloat32);
  }
  if (!a.contrast.empty()) {
    for (int64_t ch = 0; ch < n_ch; ++ch) {
      at::Tensor x = s.image[ch];
      x.copy_(torch::where(x != 0, x * a.contrast[ch] + a.shift[ch], x));
    }
  }
  s.image = s.image.contiguous();
  s.target = s.target.contiguous();
  if (s.weight.defined()) s.weight = s.weight.contiguous();
  return s;
}

}  // namespace kdseg
