#include "kdseg/data/augment.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kdseg/data/random.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

constexpr double kPi = 3.14159265358979323846;

void check_probability(double p, const char* name) {
  if (!(p >= 0 && p <= 1))
    throw Error(std::string("augmentation ") + name,
                "probability must be in [0, 1], got " + std::to_string(p));
}

// ---------------------------------------------------------------- trilinear resampling
// The spatial transforms resample a sub-box of the case that just covers the transformed patch.
// The box is copied once into a channel-interleaved float buffer (voxel-major, channels padded
// to KP = 4, 8, 12 or 16), so that each of a voxel's 8 trilinear taps reads its channels from one
// cache line and the channel loop vectorises; the buffer is thread-local and kept (no page
// faults per sample). Coordinates in double, values and weights in float (as grid_sample).

// A box of `size` voxels starting at case voxel `lo` (may reach outside the case).
struct Box {
  std::array<int64_t, 3> lo{}, size{};
  int64_t voxels() const { return size[0] * size[1] * size[2]; }
};

// The box whose voxels hold every trilinear tap of out(o) = vol(centre + M (o - (patch-1)/2)),
// with one voxel to spare on each side.
Box tap_box(const std::array<double, 3>& centre, const std::array<double, 9>& m,
            const std::array<int64_t, 3>& patch) {
  std::array<double, 3> lo_f{1e300, 1e300, 1e300}, hi_f{-1e300, -1e300, -1e300};
  for (int corner = 0; corner < 8; ++corner) {
    double o[3];
    for (int j = 0; j < 3; ++j) o[j] = ((corner >> j) & 1 ? 1.0 : -1.0) * (patch[j] - 1) / 2.0;
    for (int i = 0; i < 3; ++i) {
      const double p = centre[i] + m[3 * i] * o[0] + m[3 * i + 1] * o[1] + m[3 * i + 2] * o[2];
      lo_f[i] = std::min(lo_f[i], p);
      hi_f[i] = std::max(hi_f[i], p);
    }
  }
  Box b;
  for (int i = 0; i < 3; ++i) {
    b.lo[i] = static_cast<int64_t>(std::floor(lo_f[i])) - 1;
    b.size[i] = static_cast<int64_t>(std::ceil(hi_f[i])) + 2 - b.lo[i];
  }
  return b;
}

float* scratch_floats(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// float value of every IEEE half bit pattern (fp16 → fp32 by one load).
const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      c10::Half h;
      h.x = static_cast<uint16_t>(i);
      t[i] = static_cast<float>(h);
    }
    return t;
  }();
  return table.data();
}

// The part of box `b` inside a (D,H,W) volume: [a, e) per axis in case voxels; empty when any
// side is empty.
bool clip(const Box& b, const std::array<int64_t, 3>& dims, std::array<int64_t, 3>& a,
          std::array<int64_t, 3>& e) {
  for (int i = 0; i < 3; ++i) {
    a[i] = std::max<int64_t>(b.lo[i], 0);
    e[i] = std::min<int64_t>(b.lo[i] + b.size[i], dims[i]);
    if (e[i] <= a[i]) return false;
  }
  return true;
}

// What goes into the interleaved buffer: `channels` planes of a contiguous (K,D,H,W) volume,
// converted to float, into buffer channels [k0, k0 + channels) (labels: 3 region channels).
struct BoxSource {
  enum Kind { half, f32, u8, labels_to_regions } kind = f32;
  const void* data = nullptr;
  int64_t channels = 1, k0 = 0;
  float scale = 1;  // u8: value * scale
};

// Fills the buffer of box `b` (kp floats per voxel, voxel-major) from `sources` where the box
// meets the (D,H,W) volume `dims`, one box row at a time (a row of the buffer stays in L1 while
// every channel is written into it).
void fill_box(const std::vector<BoxSource>& sources, const std::array<int64_t, 3>& dims,
              const Box& b, float* buf, int64_t kp, int64_t n_real) {
  std::array<int64_t, 3> a{}, e{};
  if (!clip(b, dims, a, e)) return;
  const int64_t plane = dims[0] * dims[1] * dims[2];
  const float* table = half_table();
  for (int64_t d = a[0]; d < e[0]; ++d)
    for (int64_t h = a[1]; h < e[1]; ++h) {
      const int64_t row = (d * dims[1] + h) * dims[2];
      float* out = buf + (((d - b.lo[0]) * b.size[1] + (h - b.lo[1])) * b.size[2] - b.lo[2]) * kp;
      for (const BoxSource& src : sources) {
        for (int64_t c = 0; c < (src.kind == BoxSource::labels_to_regions ? 1 : src.channels);
             ++c) {
          const int64_t off = c * plane + row;
          float* o = out + src.k0 + c;
          switch (src.kind) {
            case BoxSource::half: {
              const uint16_t* r = static_cast<const uint16_t*>(src.data) + off;
              for (int64_t w = a[2]; w < e[2]; ++w) o[w * kp] = table[r[w]];
              break;
            }
            case BoxSource::f32: {
              const float* r = static_cast<const float*>(src.data) + off;
              for (int64_t w = a[2]; w < e[2]; ++w) o[w * kp] = r[w];
              break;
            }
            case BoxSource::u8: {
              const uint8_t* r = static_cast<const uint8_t*>(src.data) + off;
              for (int64_t w = a[2]; w < e[2]; ++w)
                o[w * kp] = static_cast<float>(r[w]) * src.scale;
              break;
            }
            case BoxSource::labels_to_regions: {  // WT = any label, TC = {1,4}, ET = {4}
              const uint8_t* r = static_cast<const uint8_t*>(src.data) + off;
              for (int64_t w = a[2]; w < e[2]; ++w) {
                const uint8_t x = r[w];
                float* v = o + w * kp;
                v[0] = x != 0 ? 1.f : 0.f;
                v[1] = (x == 1 || x == 4) ? 1.f : 0.f;
                v[2] = x == 4 ? 1.f : 0.f;
              }
              break;
            }
          }
        }
      }
      for (int64_t w = a[2]; w < e[2]; ++w)  // padding channels read 0
        for (int64_t c = n_real; c < kp; ++c) out[w * kp + c] = 0.f;
    }
}

// A source for image-like tensor `t` (K,D,H,W): fp16 read as is, anything else as float32
// (`keep` holds the converted copy alive).
BoxSource image_source(const at::Tensor& t, int64_t k0, at::Tensor& keep) {
  BoxSource s;
  s.channels = t.size(0);
  s.k0 = k0;
  if (t.scalar_type() == at::kHalf) {
    keep = t.contiguous();
    s.kind = BoxSource::half;
    s.data = keep.data_ptr<at::Half>();
  } else {
    keep = t.to(at::kFloat).contiguous();
    s.kind = BoxSource::f32;
    s.data = keep.data_ptr<float>();
  }
  return s;
}

// out[k][o] = trilinear sample of buffer channel k at centre + M (o - (patch-1)/2), k < K, for
// the (patch) output voxels o; `out` holds K planes of patch voxels. Every tap lies in the box
// by construction (tap_box); indices are clamped to it against rounding.
template <int KP>
inline __attribute__((always_inline)) void resample_body(
    const float* buf, const Box& b, int64_t n_channels, const std::array<double, 3>& centre,
    const std::array<double, 9>& m, const std::array<int64_t, 3>& patch, float* out) {
  const int64_t P = patch[0] * patch[1] * patch[2];
  const int64_t sd = b.size[1] * b.size[2] * KP, sh = b.size[2] * KP;
  // Neighbour steps (0 on a box side of one voxel, where the weight of the second tap is 0).
  const int64_t step_d = b.size[0] > 1 ? sd : 0, step_h = b.size[1] > 1 ? sh : 0,
                step_w = b.size[2] > 1 ? KP : 0;
  const double half[3] = {(patch[0] - 1) / 2.0, (patch[1] - 1) / 2.0, (patch[2] - 1) / 2.0};
  const int64_t max_i[3] = {std::max<int64_t>(b.size[0] - 2, 0),
                            std::max<int64_t>(b.size[1] - 2, 0),
                            std::max<int64_t>(b.size[2] - 2, 0)};
  // Per output row: first every voxel's cell and fractions (a loop the compiler vectorises),
  // then the 8 taps of all channels per voxel.
  const int64_t W = patch[2];
  thread_local std::vector<int32_t> cell;
  thread_local std::vector<float> frac;
  cell.resize(static_cast<size_t>(3 * W));
  frac.resize(static_cast<size_t>(3 * W));
  int64_t o = 0;
  for (int64_t d = 0; d < patch[0]; ++d)
    for (int64_t h = 0; h < patch[1]; ++h) {
      const double od = d - half[0], oh = h - half[1];
      for (int i = 0; i < 3; ++i) {
        const double p0 =
            centre[i] - b.lo[i] + m[3 * i] * od + m[3 * i + 1] * oh - m[3 * i + 2] * half[2];
        const double step = m[3 * i + 2];
        const int32_t hi = static_cast<int32_t>(max_i[i]);
        int32_t* ci = cell.data() + i * W;
        float* fi = frac.data() + i * W;
        for (int64_t w = 0; w < W; ++w) {
          const double x = p0 + step * static_cast<double>(w);
          int32_t k = static_cast<int32_t>(x);
          k -= static_cast<double>(k) > x;  // floor
          k = k < 0 ? 0 : k > hi ? hi : k;
          const float fr = static_cast<float>(x - static_cast<double>(k));
          ci[w] = k;
          fi[w] = fr < 0.f ? 0.f : fr > 1.f ? 1.f : fr;
        }
      }
      const int32_t *cd = cell.data(), *ch = cd + W, *cw = ch + W;
      const float *fd = frac.data(), *fh = fd + W, *fw = fh + W;
      for (int64_t w = 0; w < W; ++w, ++o) {
        const float* q0 = buf + cd[w] * sd + ch[w] * sh + cw[w] * static_cast<int64_t>(KP);
        const float* q1 = q0 + step_w;
        const float* q2 = q0 + step_h;
        const float* q3 = q2 + step_w;
        const float* q4 = q0 + step_d;
        const float* q5 = q4 + step_w;
        const float* q6 = q4 + step_h;
        const float* q7 = q6 + step_w;
        const float d1 = fd[w], d0 = 1.f - d1, h1 = fh[w], h0 = 1.f - h1, w1 = fw[w], w0 = 1.f - w1;
        const float a00 = d0 * h0, a01 = d0 * h1, a10 = d1 * h0, a11 = d1 * h1;
        const float w_0 = a00 * w0, w_1 = a00 * w1, w_2 = a01 * w0, w_3 = a01 * w1, w_4 = a10 * w0,
                    w_5 = a10 * w1, w_6 = a11 * w0, w_7 = a11 * w1;
        float acc[KP];
        for (int c = 0; c < KP; ++c)
          acc[c] = w_0 * q0[c] + w_1 * q1[c] + w_2 * q2[c] + w_3 * q3[c] + w_4 * q4[c] +
                   w_5 * q5[c] + w_6 * q6[c] + w_7 * q7[c];
        for (int64_t c = 0; c < n_channels; ++c) out[c * P + o] = acc[c];
      }
    }
}

#if defined(__x86_64__)
// The same code compiled for AVX2 (8 floats a vector) where the CPU has it. AVX2 without FMA:
// no multiply-add contraction, so both versions round identically (a sample does not depend on
// the CPU it was made on).
template <int KP>
__attribute__((target("avx2"))) void resample_avx2(
    const float* buf, const Box& b, int64_t n_channels, const std::array<double, 3>& centre,
    const std::array<double, 9>& m, const std::array<int64_t, 3>& patch, float* out) {
  resample_body<KP>(buf, b, n_channels, centre, m, patch, out);
}
#endif
template <int KP>
void resample_box(const float* buf, const Box& b, int64_t n_channels,
                  const std::array<double, 3>& centre, const std::array<double, 9>& m,
                  const std::array<int64_t, 3>& patch, float* out) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return resample_avx2<KP>(buf, b, n_channels, centre, m, patch, out);
#endif
  resample_body<KP>(buf, b, n_channels, centre, m, patch, out);
}

void resample_box_any(const float* buf, const Box& b, int64_t n_channels, int64_t kp,
                      const std::array<double, 3>& centre, const std::array<double, 9>& m,
                      const std::array<int64_t, 3>& patch, float* out) {
  switch (kp) {
    case 4:
      return resample_box<4>(buf, b, n_channels, centre, m, patch, out);
    case 8:
      return resample_box<8>(buf, b, n_channels, centre, m, patch, out);
    case 12:
      return resample_box<12>(buf, b, n_channels, centre, m, patch, out);
    case 16:
      return resample_box<16>(buf, b, n_channels, centre, m, patch, out);
    default:
      throw Error("augmentation",
                  "at most 16 channels in one pass, got " + std::to_string(n_channels));
  }
}

int64_t padded_channels(int64_t k) {
  return (k + 3) / 4 * 4;
}

// The thread's buffer for box `b` with kp channels per voxel; zeroed where the box reaches
// outside the volume (fill_box writes the rest).
float* box_buffer(const Box& b, int64_t kp, const std::array<int64_t, 3>& dims) {
  const int64_t voxels = b.voxels();
  float* buf = scratch_floats(static_cast<size_t>(voxels * kp));
  bool inside = true;
  for (int i = 0; i < 3; ++i) inside = inside && b.lo[i] >= 0 && b.lo[i] + b.size[i] <= dims[i];
  if (!inside) std::fill(buf, buf + voxels * kp, 0.f);
  return buf;
}

}  // namespace

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
  if (volume.dim() != 4) throw Error("affine_resample", "the volume must be (K,D,H,W)");
  const std::array<int64_t, 3> dims{volume.size(1), volume.size(2), volume.size(3)};
  const int64_t k = volume.size(0);
  at::Tensor out = torch::empty({k, patch[0], patch[1], patch[2]}, torch::kFloat32);
  const Box b = tap_box(centre, m, patch);
  for (int64_t k0 = 0; k0 < k; k0 += 12) {  // at most 12 channels per pass
    const int64_t n = std::min<int64_t>(12, k - k0);
    const int64_t kp = padded_channels(n);
    float* buf = box_buffer(b, kp, dims);
    at::Tensor keep;
    fill_box({image_source(volume.slice(0, k0, k0 + n), 0, keep)}, dims, b, buf, kp, n);
    resample_box_any(buf, b, n, kp, centre, m, patch, out[k0].data_ptr<float>());
  }
  return out;
}

at::Tensor affine_resample_grid_sample(const at::Tensor& volume,
                                       const std::array<double, 3>& centre,
                                       const std::array<double, 9>& m,
                                       const std::array<int64_t, 3>& patch) {
  // Normalised output coordinate u (align_corners = true) -> volume voxel p = centre + M h u,
  // h = (patch-1)/2 -> normalised input v = g p - 1, g = 2/(size-1): v = A u + b.
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
  return at::grid_sampler(x, grid, /*bilinear*/ 0, /*zeros*/ 0, /*align_corners=*/true).squeeze(0);
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
    // One resampling pass over a channel-interleaved copy of the box the patch maps into:
    // image channels, then the target's 3 (regions from the labels, or soft targets), then the
    // ignore mask.
    const auto m = spatial_matrix(a, c.geometry().spacing);
    std::array<double, 3> centre{};
    for (int i = 0; i < 3; ++i) centre[i] = spec.corner[i] + (patch[i] - 1) / 2.0;
    const Box b = tap_box(centre, m, patch);
    const at::Tensor img = c.image();
    const std::array<int64_t, 3> dims{img.size(1), img.size(2), img.size(3)};
    const int64_t n_target = (soft || labelled) ? 3 : 0;
    const int64_t k = n_ch + n_target + (has_ignore ? 1 : 0);
    const int64_t kp = padded_channels(k);
    float* buf = box_buffer(b, kp, dims);
    at::Tensor keep_image, keep_soft, keep_labels, keep_ignore;
    std::vector<BoxSource> sources{image_source(img, 0, keep_image)};
    // A uint8 (K,D,H,W) source read into buffer channels [k0, k0 + channels).
    auto u8_source = [](const at::Tensor& t, BoxSource::Kind kind, int64_t channels, int64_t k0,
                        float scale) {
      BoxSource src;
      src.kind = kind;
      src.data = t.data_ptr<uint8_t>();
      src.channels = channels;
      src.k0 = k0;
      src.scale = scale;
      return src;
    };
    if (soft) {
      keep_soft = c.soft().contiguous();
      sources.push_back(u8_source(keep_soft, BoxSource::u8, 3, n_ch, 1.f / 255.f));
    } else if (labelled) {
      keep_labels = c.labels().contiguous();
      sources.push_back(u8_source(keep_labels, BoxSource::labels_to_regions, 3, n_ch, 1.f));
    }
    if (has_ignore) {
      keep_ignore = c.ignore().contiguous();
      sources.push_back(u8_source(keep_ignore, BoxSource::u8, 1, k - 1, 1.f));
    }
    fill_box(sources, dims, b, buf, kp, k);
    at::Tensor out = torch::empty({k, patch[0], patch[1], patch[2]}, torch::kFloat32);
    resample_box_any(buf, b, k, kp, centre, m, patch, out.data_ptr<float>());
    const int64_t P = patch[0] * patch[1] * patch[2];
    float* o = out.data_ptr<float>();
    s.image = out.slice(0, 0, n_ch);
    if (soft) {
      for (int64_t i = n_ch * P; i < (n_ch + 3) * P; ++i) o[i] = std::min(std::max(o[i], 0.f), 1.f);
      s.target = out.slice(0, n_ch, n_ch + 3);
    } else if (labelled) {
      for (int64_t i = n_ch * P; i < (n_ch + 3) * P; ++i) o[i] = o[i] >= 0.5f ? 1.f : 0.f;
      s.target = out.slice(0, n_ch, n_ch + 3);
    } else {
      s.target = torch::zeros({3, patch[0], patch[1], patch[2]}, torch::kFloat32);
    }
    if (has_ignore) {
      for (int64_t i = (k - 1) * P; i < k * P; ++i) o[i] = o[i] >= 0.5f ? 0.f : 1.f;
      s.weight = out.slice(0, k - 1, k);
    }
  }
  if (!a.contrast.empty()) {  // x -> x * contrast + shift on non-zero voxels
    s.image = s.image.contiguous();
    const int64_t P = patch[0] * patch[1] * patch[2];
    float* x = s.image.data_ptr<float>();
    for (int64_t ch = 0; ch < n_ch; ++ch) {
      const float co = static_cast<float>(a.contrast[ch]), sh = static_cast<float>(a.shift[ch]);
      float* p = x + ch * P;
      for (int64_t i = 0; i < P; ++i) p[i] = p[i] != 0.f ? p[i] * co + sh : p[i];
    }
  }
  s.image = s.image.contiguous();
  s.target = s.target.contiguous();
  if (s.weight.defined()) s.weight = s.weight.contiguous();
  return s;
}

}  // namespace kdseg
