#include "kdseg/models/narrow_conv.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "kdseg/runtime/autocast.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace {

// 16 float32 lanes: one AVX-512 register, two AVX2 registers, four SSE ones (GCC lowers the
// vector type to what the function is compiled for).
using v16 = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

#define KDSEG_INLINE inline __attribute__((always_inline))
// v16 never crosses a call: every function taking or returning one is inlined into a kernel
// compiled for one instruction set, so GCC's note on the AVX-512 calling convention is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

KDSEG_INLINE v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

KDSEG_INLINE void store16(float* p, v16 v) {
  std::memcpy(p, &v, sizeof v);
}

// A (B,C,D,H,W) float32 tensor copied into (B,C,D+2,H+2,Wp) with zeros around it: voxel (d,h,w)
// at (d+1,h+1,w+1). Wp = 16·⌈W/16⌉ + 2, so that every tap of every 16-voxel row reads in bounds.
struct Padded {
  at::Tensor t;
  int64_t batch = 0, channels = 0, depth = 0, height = 0, width = 0;  // of the unpadded tensor
  int64_t n_vec = 0;                                                  // ⌈W/16⌉
  int64_t wp() const { return n_vec * kLanes + 2; }
  int64_t row() const { return wp(); }
  int64_t plane() const { return (height + 2) * wp(); }
  int64_t chan() const { return (depth + 2) * plane(); }
  const float* data() const { return t.data_ptr<float>(); }
};

// The geometry of t, a padded copy (B,C,D+2,H+2,Wp) of a tensor `width` voxels wide.
Padded padded(at::Tensor t, int64_t width) {
  Padded p;
  p.t = std::move(t);
  p.batch = p.t.size(0);
  p.channels = p.t.size(1);
  p.depth = p.t.size(2) - 2;
  p.height = p.t.size(3) - 2;
  p.width = width;
  p.n_vec = (width + kLanes - 1) / kLanes;
  return p;
}

Padded pad(const at::Tensor& input) {
  const at::Tensor x = input.contiguous();
  const int64_t wp = (x.size(4) + kLanes - 1) / kLanes * kLanes + 2;
  const Padded p = padded(
      at::empty({x.size(0), x.size(1), x.size(2) + 2, x.size(3) + 2, wp}, x.options()), x.size(4));
  const int64_t dp = p.depth + 2, hp = p.height + 2;
  const float* src = x.data_ptr<float>();
  float* dst = p.t.data_ptr<float>();
  const int64_t n_rows = p.batch * p.channels * dp * hp;
  const int64_t d = p.depth, h = p.height, w = p.width;
  at::parallel_for(0, n_rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* out = dst + r * wp;
      const int64_t hh = r % hp, dd = (r / hp) % dp, bc = r / (hp * dp);
      if (dd == 0 || dd == d + 1 || hh == 0 || hh == h + 1) {
        std::memset(out, 0, wp * sizeof(float));
        continue;
      }
      out[0] = 0;
      std::memcpy(out + 1, src + ((bc * d + dd - 1) * h + hh - 1) * w, w * sizeof(float));
      std::memset(out + 1 + w, 0, (wp - 1 - w) * sizeof(float));
    }
  });
  return p;
}

// ---------------------------------------------------------------- forward (narrow output)
// acc[o][n] = bias[o] + Σ_i Σ_k w[o,i,k] · x[i, row + k] for NV rows of 16 voxels, OB outputs.
// `x` points at the padded input's (b, 0, d, h, 16·v); weights are (out, C, 27), k = 9kd+3kh+kw.
template <int OB, int NV>
KDSEG_INLINE void forward_tile(const float* x, const Padded& p, const float* w, int64_t w_stride,
                               const float* bias, v16 (&acc)[OB][NV]) {
  for (int o = 0; o < OB; ++o)
    for (int n = 0; n < NV; ++n) acc[o][n] = v16{} + (bias ? bias[o] : 0.f);
  for (int64_t i = 0; i < p.channels; ++i) {
    const float* xi = x + i * p.chan();
    const float* wi = w + i * 27;
    for (int kd = 0; kd < 3; ++kd)
      for (int kh = 0; kh < 3; ++kh) {
        const float* row = xi + kd * p.plane() + kh * p.row();
        for (int kw = 0; kw < 3; ++kw) {
          v16 v[NV];
          for (int n = 0; n < NV; ++n) v[n] = load16(row + kw + n * kLanes);
          const int k = kd * 9 + kh * 3 + kw;
          for (int o = 0; o < OB; ++o) {
            const float s = wi[o * w_stride + k];
            for (int n = 0; n < NV; ++n) acc[o][n] += v[n] * s;
          }
        }
      }
  }
}

// Rows [begin, end) of (b, d, h) for outputs o0 … o0+OB-1 of y (B,out,D,H,W).
template <int OB>
KDSEG_INLINE void forward_rows(const Padded& p, const float* w, const float* bias, float* y,
                               int64_t n_out, int64_t o0, int64_t begin, int64_t end) {
  // Accumulators OB × NV ≤ 24 of the 32 registers; each input row is read in runs of NV vectors.
  constexpr int NV = OB <= 3 ? 8 : OB <= 6 ? 4 : 2;
  const int64_t w_stride = p.channels * 27, width = p.width;
  const float* wb = w + o0 * w_stride;
  const float* bb = bias ? bias + o0 : nullptr;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t h = r % p.height, d = (r / p.height) % p.depth, b = r / (p.height * p.depth);
    const float* x = p.data() + b * p.channels * p.chan() + d * p.plane() + h * p.row();
    float* yr = y + ((b * n_out + o0) * p.depth + d) * p.height * width + h * width;
    const int64_t y_chan = p.depth * p.height * width;
    auto put = [&](int o, int64_t v, const v16& a) {
      float* dst = yr + o * y_chan + v * kLanes;
      const int64_t n = std::min(kLanes, width - v * kLanes);
      if (n == kLanes)
        store16(dst, a);
      else
        std::memcpy(dst, &a, n * sizeof(float));
    };
    int64_t v = 0;
    for (; v + NV <= p.n_vec; v += NV) {
      v16 acc[OB][NV];
      forward_tile<OB, NV>(x + v * kLanes, p, wb, w_stride, bb, acc);
      for (int o = 0; o < OB; ++o)
        for (int n = 0; n < NV; ++n) put(o, v + n, acc[o][n]);
    }
    for (; v < p.n_vec; ++v) {
      v16 acc[OB][1];
      forward_tile<OB, 1>(x + v * kLanes, p, wb, w_stride, bb, acc);
      for (int o = 0; o < OB; ++o) put(o, v, acc[o][0]);
    }
  }
}

// ---------------------------------------------------------------- weight gradient
// part[o][i][k] += Σ over the output plane (b, d) of g[o, voxel] · x[i, voxel + k], kept as 16
// lane sums, for outputs o0 … o0+OB-1. `g` points at grad_out's (b, 0, d, 0, 0), rows of
// 16·n_vec voxels (zeros past W), channels g_chan apart; `x` at the padded input's (b, 0, d, 0, 0).
// Each (i, kd, kh) streams a whole plane of x and g rows, which the prefetchers follow.
template <int OB>
KDSEG_INLINE void weight_grad_plane(const Padded& p, const float* x, const float* g, int64_t g_chan,
                                    int64_t o0, v16* part) {
  const int64_t n_pad = p.n_vec * kLanes, rows = p.height, row = p.row(), plane = p.plane();
  const float* gb = g + o0 * g_chan;
  for (int64_t i = 0; i < p.channels; ++i)
    for (int kd = 0; kd < 3; ++kd)
      for (int kh = 0; kh < 3; ++kh) {
        const float* xs = x + i * p.chan() + kd * plane + kh * row;
        v16 acc[OB][3] = {};
        for (int64_t h = 0; h < rows; ++h) {
          const float* xr = xs + h * row;
          const float* gr = gb + h * n_pad;
          for (int64_t v = 0; v < p.n_vec; ++v) {
            const float* xv = xr + v * kLanes;
            const v16 x0 = load16(xv), x1 = load16(xv + 1), x2 = load16(xv + 2);
            for (int o = 0; o < OB; ++o) {
              const v16 gv = load16(gr + o * g_chan + v * kLanes);
              acc[o][0] += gv * x0;
              acc[o][1] += gv * x1;
              acc[o][2] += gv * x2;
            }
          }
        }
        for (int o = 0; o < OB; ++o)
          for (int kw = 0; kw < 3; ++kw)
            part[((o0 + o) * p.channels + i) * 27 + kd * 9 + kh * 3 + kw] += acc[o][kw];
      }
}

// ---------------------------------------------------------------- weight gradient, wide sides
// For convolutions whose sides are both wide (out a multiple of 8), where LibTorch 1.13 hands the
// weight gradient to oneDNN's im2col + GEMM (its direct kernels take no padded 3-D case): ~15
// GFLOP/s for 8 → 8 at 48³ on an AVX2 CPU, 40 % of a training step of the cpu preset's student.
// Channels-last copies: g (B,D,H,W,out) and x padded (B,D+2,H+2,W+2,C). Eight outputs sit in one
// vector; IB inputs × 3 kw taps are the accumulators (12 of the 16 AVX2 registers), and each
// (kd, kh) streams one plane of g and x rows (in L2 at these sizes).
using v8 = float __attribute__((vector_size(32)));
constexpr int64_t kWideLanes = 8;

KDSEG_INLINE v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct WidePlane {
  const float* g;  // grad_out, channels-last, at (b, d, 0, 0, 0)
  const float* x;  // padded input, channels-last, at (b, d, 0, 0, 0) of the padded volume
  int64_t height, width, n_in, n_out;
};

// part[(o·C + i)·27 + 9 kd + 3 kh + kw] += Σ over the plane of g[o] · x[i] for o0 … o0+7 and
// i0 … i0+IB-1, all 27 taps.
template <int IB>
KDSEG_INLINE void wide_weight_grad_block(const WidePlane& p, int64_t o0, int64_t i0, double* part) {
  const int64_t xrow = (p.width + 2) * p.n_in, xplane = (p.height + 2) * xrow;
  for (int kd = 0; kd < 3; ++kd)
    for (int kh = 0; kh < 3; ++kh) {
      v8 acc[IB][3] = {};
      const float* xs = p.x + kd * xplane + kh * xrow + i0;
      for (int64_t h = 0; h < p.height; ++h) {
        const float* gr = p.g + h * p.width * p.n_out + o0;
        const float* xr = xs + h * xrow;
        for (int64_t w = 0; w < p.width; ++w) {
          const v8 gv = load8(gr + w * p.n_out);
          const float* xv = xr + w * p.n_in;
          for (int kw = 0; kw < 3; ++kw)
            for (int ib = 0; ib < IB; ++ib) acc[ib][kw] += gv * xv[kw * p.n_in + ib];
        }
      }
      for (int ib = 0; ib < IB; ++ib)
        for (int kw = 0; kw < 3; ++kw)
          for (int l = 0; l < kWideLanes; ++l)
            part[((o0 + l) * p.n_in + i0 + ib) * 27 + kd * 9 + kh * 3 + kw] += acc[ib][kw][l];
    }
}

// The kernels of one instruction set: forward rows, weight-gradient rows.
#define KDSEG_NARROW_KERNELS(SUFFIX, TARGET)                                                      \
  TARGET void forward_rows_##SUFFIX(const Padded& p, const float* w, const float* bias, float* y, \
                                    int64_t n_out, int64_t o0, int64_t ob, int64_t begin,         \
                                    int64_t end) {                                                \
    switch (ob) {                                                                                 \
      case 1:                                                                                     \
        return forward_rows<1>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 2:                                                                                     \
        return forward_rows<2>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 3:                                                                                     \
        return forward_rows<3>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 4:                                                                                     \
        return forward_rows<4>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 5:                                                                                     \
        return forward_rows<5>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 6:                                                                                     \
        return forward_rows<6>(p, w, bias, y, n_out, o0, begin, end);                             \
      case 7:                                                                                     \
        return forward_rows<7>(p, w, bias, y, n_out, o0, begin, end);                             \
      default:                                                                                    \
        return forward_rows<8>(p, w, bias, y, n_out, o0, begin, end);                             \
    }                                                                                             \
  }                                                                                               \
  TARGET void wide_weight_grad_plane_##SUFFIX(const WidePlane& p, double* part) {                 \
    for (int64_t o0 = 0; o0 < p.n_out; o0 += kWideLanes)                                          \
      for (int64_t i0 = 0; i0 < p.n_in; i0 += 4) {                                                \
        switch (std::min<int64_t>(4, p.n_in - i0)) {                                              \
          case 1:                                                                                 \
            wide_weight_grad_block<1>(p, o0, i0, part);                                           \
            break;                                                                                \
          case 2:                                                                                 \
            wide_weight_grad_block<2>(p, o0, i0, part);                                           \
            break;                                                                                \
          case 3:                                                                                 \
            wide_weight_grad_block<3>(p, o0, i0, part);                                           \
            break;                                                                                \
          default:                                                                                \
            wide_weight_grad_block<4>(p, o0, i0, part);                                           \
            break;                                                                                \
        }                                                                                         \
      }                                                                                           \
  }                                                                                               \
  TARGET void weight_grad_plane_##SUFFIX(const Padded& p, const float* x, const float* g,         \
                                         int64_t g_chan, int64_t n_out, v16* part) {              \
    for (int64_t o0 = 0; o0 < n_out; o0 += 6) {                                                   \
      switch (std::min<int64_t>(6, n_out - o0)) {                                                 \
        case 1:                                                                                   \
          weight_grad_plane<1>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
        case 2:                                                                                   \
          weight_grad_plane<2>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
        case 3:                                                                                   \
          weight_grad_plane<3>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
        case 4:                                                                                   \
          weight_grad_plane<4>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
        case 5:                                                                                   \
          weight_grad_plane<5>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
        default:                                                                                  \
          weight_grad_plane<6>(p, x, g, g_chan, o0, part);                                        \
          break;                                                                                  \
      }                                                                                           \
    }                                                                                             \
  }

KDSEG_NARROW_KERNELS(generic, )
#if defined(__x86_64__)
KDSEG_NARROW_KERNELS(avx2, __attribute__((target("avx2,fma"))))
KDSEG_NARROW_KERNELS(avx512, __attribute__((target("avx512f,fma"))))
#endif

// The kernels of the best instruction set this CPU has, chosen once.
struct Kernels {
  void (*forward_rows)(const Padded&, const float*, const float*, float*, int64_t, int64_t, int64_t,
                       int64_t, int64_t);
  void (*weight_grad_plane)(const Padded&, const float*, const float*, int64_t, int64_t, v16*);
  void (*wide_weight_grad_plane)(const WidePlane&, double*);
};

const Kernels& kernels() {
  static const Kernels best = [] {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f"))
      return Kernels{forward_rows_avx512, weight_grad_plane_avx512, wide_weight_grad_plane_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{forward_rows_avx2, weight_grad_plane_avx2, wide_weight_grad_plane_avx2};
#endif
    return Kernels{forward_rows_generic, weight_grad_plane_generic, wide_weight_grad_plane_generic};
  }();
  return best;
}

void check_float_cpu(const at::Tensor& t, const char* what) {
  if (!t.defined() || t.scalar_type() != at::kFloat || !t.device().is_cpu())
    throw Error("narrow_conv3d", std::string(what) + " must be a float32 CPU tensor");
}

void check_geometry(const at::Tensor& x, const at::Tensor& weight) {
  if (x.dim() != 5 || weight.dim() != 5 || weight.size(1) != x.size(1) || weight.size(2) != 3 ||
      weight.size(3) != 3 || weight.size(4) != 3)
    throw Error("narrow_conv3d",
                "expected x (B,C,D,H,W) and weight (out,C,3,3,3), got " + std::to_string(x.dim()) +
                    "-D x with " + std::to_string(x.dim() > 1 ? x.size(1) : 0) +
                    " channels and a " + std::to_string(weight.dim()) + "-D weight");
}

// y (B,out,D,H,W) from the padded input, weights (out,C,27) contiguous and bias (out) or null.
at::Tensor forward_padded(const Padded& p, const float* w, const float* bias, int64_t n_out,
                          const at::TensorOptions& options) {
  at::Tensor y = at::empty({p.batch, n_out, p.depth, p.height, p.width}, options);
  float* yp = y.data_ptr<float>();
  const int64_t n_rows = p.batch * p.depth * p.height;
  const auto forward_rows = kernels().forward_rows;
  for (int64_t o0 = 0; o0 < n_out; o0 += 8) {
    const int64_t ob = std::min<int64_t>(8, n_out - o0);
    at::parallel_for(0, n_rows, 16, [&](int64_t begin, int64_t end) {
      forward_rows(p, w, bias, yp, n_out, o0, ob, begin, end);
    });
  }
  return y;
}

// A weight gradient (out,C,3,3,3) summed over planes [0, n_planes): chunk(begin, end, sums) adds
// the planes of one chunk into its own n_w doubles; the chunks are added in plane order, so the
// result does not depend on which thread finished first.
template <typename Chunk>
at::Tensor sum_planes_in_order(int64_t n_planes, int64_t n_out, int64_t n_in,
                               const at::TensorOptions& options, const Chunk& chunk) {
  const int64_t n_w = n_out * n_in * 27;
  std::mutex mutex;
  std::map<int64_t, std::vector<double>> partials;  // first plane of the chunk → its sums
  at::parallel_for(0, n_planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> sums(n_w, 0.0);
    chunk(begin, end, sums.data());
    std::lock_guard<std::mutex> lock(mutex);
    partials[begin] = std::move(sums);
  });
  std::vector<double> total(n_w, 0.0);
  for (const auto& [first, sums] : partials)
    for (int64_t j = 0; j < n_w; ++j) total[j] += sums[j];
  at::Tensor gw = at::empty({n_out, n_in, 3, 3, 3}, options);
  std::copy(total.begin(), total.end(), gw.data_ptr<float>());
  return gw;
}

// dL/dw (out,C,3,3,3) from grad_out and the padded input. Each chunk of planes sums into its own
// 16-lane partials, added up in double per chunk (sum_planes_in_order).
at::Tensor weight_grad_padded(const at::Tensor& grad_out, const Padded& p) {
  at::Tensor g = grad_out.contiguous();
  const int64_t n_out = g.size(1), n_w = n_out * p.channels * 27, n_pad = p.n_vec * kLanes;
  if (n_pad != p.width)  // rows of whole vectors with zeros past W
    g = at::constant_pad_nd(g, {0, n_pad - p.width});
  const int64_t g_chan = p.depth * p.height * n_pad;
  const float* gp = g.data_ptr<float>();
  const auto weight_grad_plane = kernels().weight_grad_plane;
  return sum_planes_in_order(
      p.batch * p.depth, n_out, p.channels, g.options(),
      [&](int64_t begin, int64_t end, double* sums) {
        // A 64-byte aligned buffer (LibTorch's CPU allocator): std::vector<v16> is not, since
        // this file is compiled for the baseline ISA, where GCC gives v16 16-byte alignment, while
        // the AVX2 and AVX-512 kernels store to it with aligned moves (a crash whenever malloc
        // returned an address that is not a multiple of 32).
        const at::Tensor part_buffer = at::zeros({n_w * kLanes}, g.options());
        v16* part = reinterpret_cast<v16*>(part_buffer.data_ptr<float>());
        for (int64_t r = begin; r < end; ++r) {
          const int64_t d = r % p.depth, b = r / p.depth;
          const float* x = p.data() + b * p.channels * p.chan() + d * p.plane();
          const float* gr = gp + b * n_out * g_chan + d * p.height * n_pad;
          weight_grad_plane(p, x, gr, g_chan, n_out, part);
        }
        for (int64_t j = 0; j < n_w; ++j)
          for (int l = 0; l < kLanes; ++l) sums[j] += part[j][l];
      });
}

// (B,C,D,H,W) contiguous → (B,D+2m,H+2m,W+2m,C) with m voxels of zeros around it, one row per
// task (ATen's permute + contiguous takes 7-11 ms for 8 channels at 2×48³, this ~1 ms).
at::Tensor channels_last(const at::Tensor& x, int64_t m) {
  const int64_t nb = x.size(0), nc = x.size(1), nd = x.size(2), nh = x.size(3), nw = x.size(4);
  const int64_t pd = nd + 2 * m, ph = nh + 2 * m, pw = nw + 2 * m, chan = nd * nh * nw;
  at::Tensor y = at::empty({nb, pd, ph, pw, nc}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  at::parallel_for(0, nb * pd * ph, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t h = r % ph - m, d = (r / ph) % pd - m, b = r / (ph * pd);
      float* out = dst + r * pw * nc;
      if (d < 0 || d >= nd || h < 0 || h >= nh) {
        std::fill(out, out + pw * nc, 0.f);
        continue;
      }
      std::fill(out, out + m * nc, 0.f);
      std::fill(out + (m + nw) * nc, out + pw * nc, 0.f);
      const float* in = src + b * nc * chan + (d * nh + h) * nw;
      for (int64_t c = 0; c < nc; ++c)
        for (int64_t w = 0; w < nw; ++w) out[(m + w) * nc + c] = in[c * chan + w];
    }
  });
  return y;
}

// dL/dw (out,C,3,3,3) of a convolution with out a multiple of 8, from grad_out and x, through
// channels-last copies; partial sums per chunk of planes in double (sum_planes_in_order).
at::Tensor wide_weight_grad(const at::Tensor& grad_out, const at::Tensor& x) {
  const int64_t depth = x.size(2), height = x.size(3), width = x.size(4), n_in = x.size(1),
                n_out = grad_out.size(1);
  const at::Tensor gc = channels_last(grad_out.contiguous(), 0);
  const at::Tensor xc = channels_last(x.contiguous(), 1);
  const float* gp = gc.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  const int64_t g_plane = height * width * n_out, x_plane = (height + 2) * (width + 2) * n_in;
  const auto plane_kernel = kernels().wide_weight_grad_plane;
  return sum_planes_in_order(x.size(0) * depth, n_out, n_in, x.options(),
                             [&](int64_t begin, int64_t end, double* sums) {
                               for (int64_t r = begin; r < end; ++r) {
                                 const int64_t d = r % depth, b = r / depth;
                                 const WidePlane p{gp + (b * depth + d) * g_plane,
                                                   xp + (b * (depth + 2) + d) * x_plane,
                                                   height,
                                                   width,
                                                   n_in,
                                                   n_out};
                                 plane_kernel(p, sums);
                               }
                             });
}

// dL/dx: the forward kernel over the padded grad_out with the weights transposed (in ↔ out) and
// mirrored in all three axes: dx[i, v] = Σ_o Σ_k w[o,i,k] · g[o, v + 1 − k] = Σ_o Σ_k'
// w[o,i,26−k'] · g_padded[o, v + k'].
at::Tensor input_grad(const at::Tensor& grad_out, const at::Tensor& weight) {
  const Padded gp = pad(grad_out);
  const at::Tensor w_t = weight.flip({2, 3, 4}).transpose(0, 1).contiguous();  // (C,out,3,3,3)
  return forward_padded(gp, w_t.data_ptr<float>(), nullptr, w_t.size(0), grad_out.options());
}

at::Tensor forward_narrow(const Padded& p, const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
  return forward_padded(p, w.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr,
                        w.size(0), w.options());
}

class NarrowConv3d : public torch::autograd::Function<NarrowConv3d> {
 public:
  // A narrow output runs kdseg's kernel and keeps the padded input for the weight gradient; a
  // wide output (narrow or wide input) runs oneDNN, which is fast forward, and keeps x.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias_or_empty) {
    const at::Tensor bias = bias_or_empty.numel() > 0 ? bias_or_empty : at::Tensor();
    const bool narrow_out = weight.size(0) <= kNarrowChannels;
    ctx->saved_data["narrow_out"] = narrow_out;
    ctx->saved_data["has_bias"] = bias.defined();
    if (narrow_out) {
      Padded p = pad(x);
      at::Tensor y = forward_narrow(p, weight, bias);
      ctx->saved_data["width"] = x.size(4);
      ctx->save_for_backward({p.t, weight});
      return y;
    }
    ctx->save_for_backward({x, weight});
    return at::conv3d(x, weight, bias, 1, 1);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const bool narrow_out = ctx->saved_data["narrow_out"].toBool();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor g = grads[0].contiguous(), weight = saved[1];
    Padded p;
    const bool narrow_in = weight.size(1) <= kNarrowChannels;
    if (narrow_out)
      p = padded(saved[0], ctx->saved_data["width"].toInt());
    else if (ctx->needs_input_grad(1) && narrow_in)
      p = pad(saved[0]);
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(1))
      gw = narrow_out || narrow_in ? weight_grad_padded(g, p) : wide_weight_grad(g, saved[0]);
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) gb = g.sum({0, 2, 3, 4});
    if (ctx->needs_input_grad(0)) {
      if (narrow_out) {
        gx = input_grad(g, weight);
      } else {
        const at::Tensor& x = saved[0];
        gx = std::get<0>(at::convolution_backward(g, x, weight, c10::nullopt, {1, 1, 1}, {1, 1, 1},
                                                  {1, 1, 1}, false, {0, 0, 0}, 1,
                                                  {true, false, false}));
      }
    }
    return {gx, gw, gb};
  }
};

}  // namespace

thread_local bool t_narrow_off = false;

NarrowConvOff::NarrowConvOff(bool off) : was_off_(t_narrow_off) {
  t_narrow_off = off;
}

NarrowConvOff::~NarrowConvOff() {
  t_narrow_off = was_off_;
}

bool wide_conv3d_applies(int64_t in, int64_t out) {
  return out % kWideLanes == 0 && in <= kWideChannels && out <= kWideChannels;
}

bool narrow_conv3d_applies(const at::Tensor& x, const at::Tensor& weight) {
  return !t_narrow_off && x.defined() && weight.defined() && x.dim() == 5 && weight.dim() == 5 &&
         x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
         x.device().is_cpu() && weight.device().is_cpu() && weight.size(1) == x.size(1) &&
         weight.size(2) == 3 && weight.size(3) == 3 && weight.size(4) == 3 && x.numel() > 0 &&
         (weight.size(0) <= kNarrowChannels || weight.size(1) <= kNarrowChannels ||
          wide_conv3d_applies(weight.size(1), weight.size(0))) &&
         !cpu_autocast_enabled();  // under autocast the convolution is LibTorch's, in bf16
}

at::Tensor narrow_conv3d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!narrow_conv3d_applies(x, weight)) return at::conv3d(x, weight, bias, 1, 1);
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                   (bias.defined() && bias.requires_grad()));
  // LibTorch's custom functions take no undefined tensor: no bias travels as an empty one.
  if (grad) return NarrowConv3d::apply(x, weight, bias.defined() ? bias : at::empty({0}));
  // Without a backward pass oneDNN's forward is as fast (0.12 s against 0.11 s for 16→3 at
  // 144×144×128) and needs no padded copy of the input (387 MB at a whole 1 mm case's crop).
  return at::conv3d(x, weight, bias, 1, 1);
}

at::Tensor narrow_conv3d_forward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias) {
  check_float_cpu(x, "x");
  check_float_cpu(weight, "weight");
  check_geometry(x, weight);
  if (bias.defined()) check_float_cpu(bias, "bias");
  return forward_narrow(pad(x), weight, bias);
}

at::Tensor narrow_conv3d_weight_grad(const at::Tensor& grad_out, const at::Tensor& x) {
  check_float_cpu(grad_out, "grad_out");
  check_float_cpu(x, "x");
  if (grad_out.dim() != 5 || x.dim() != 5 || grad_out.size(0) != x.size(0) ||
      grad_out.sizes().slice(2) != x.sizes().slice(2))
    throw Error("narrow_conv3d", "grad_out and x must be (B,out,D,H,W) and (B,C,D,H,W)");
  return weight_grad_padded(grad_out, pad(x));
}

at::Tensor wide_conv3d_weight_grad(const at::Tensor& grad_out, const at::Tensor& x) {
  check_float_cpu(grad_out, "grad_out");
  check_float_cpu(x, "x");
  if (grad_out.dim() != 5 || x.dim() != 5 || grad_out.size(0) != x.size(0) ||
      grad_out.sizes().slice(2) != x.sizes().slice(2) || grad_out.size(1) % kWideLanes != 0)
    throw Error("narrow_conv3d",
                "grad_out and x must be (B,out,D,H,W) and (B,C,D,H,W) with out a multiple of 8");
  return wide_weight_grad(grad_out, x);
}

at::Tensor narrow_conv3d_input_grad(const at::Tensor& grad_out, const at::Tensor& weight) {
  check_float_cpu(grad_out, "grad_out");
  check_float_cpu(weight, "weight");
  if (grad_out.dim() != 5 || weight.dim() != 5 || weight.size(0) != grad_out.size(1))
    throw Error("narrow_conv3d", "grad_out must be (B,out,D,H,W) for a weight (out,C,3,3,3)");
  return input_grad(grad_out.contiguous(), weight);
}

}  // namespace kdseg
