#include "kdseg/infer/onednn_student.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>

#include "kdseg/models/blocks.h"
#include "kdseg/models/resunet.h"
#include "kdseg/models/student.h"
#include "kdseg/models/unet.h"
#include "kdseg/util/bf16.h"
#include "kdseg/util/error.h"

#if defined(KDSEG_HAVE_ONEDNN)
#include <immintrin.h>
#include <sys/mman.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace kdseg {

#if !defined(KDSEG_HAVE_ONEDNN)

std::string onednn_unavailable(const SegNetImpl&, bool) {
  return "this build of kdseg has no oneDNN (install libdnnl-dev and rebuild)";
}
struct OneDnnNet::Impl {};
OneDnnNet::OneDnnNet() = default;
OneDnnNet::~OneDnnNet() = default;
OneDnnStudent::OneDnnStudent(const StudentImpl& net, bool bf16) {
  throw Error("oneDNN student", onednn_unavailable(net, bf16));
}
OneDnnUNet::OneDnnUNet(const UNetImpl& net, bool bf16) {
  throw Error("oneDNN unet", onednn_unavailable(net, bf16));
}
OneDnnResUNet::OneDnnResUNet(const ResUNetImpl& net, bool bf16) {
  throw Error("oneDNN " + net.arch(), onednn_unavailable(net, bf16));
}
std::shared_ptr<OneDnnNet> make_onednn(const SegNetImpl&, bool) {
  return nullptr;
}
int64_t onednn_block(bool) {
  return 0;
}
bool OneDnnNet::bf16() const {
  return true;
}
int64_t OneDnnNet::block() const {
  return 0;
}
at::Tensor OneDnnNet::forward(const at::Tensor&) const {
  return {};
}
at::Tensor OneDnnNet::predict_mirrored(const at::Tensor&, const std::vector<std::vector<int64_t> >&,
                                       const std::array<int64_t, 3>&) const {
  return {};
}

#else

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
constexpr int64_t kBf16Block = 16;  // channels per block of bf16 maps (nCdhw16c)
constexpr int64_t kChunk = 2048;    // voxels per float partial sum of the GroupNorm statistics
constexpr float kSlope = 0.01f;     // LeakyReLU, as the student and unet

bool cpu_has(dnnl::cpu_isa want) {
  const int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
  return (isa & static_cast<int>(want)) == static_cast<int>(want);
}
bool cpu_has_bf16_dot() {
  return cpu_has(dnnl::cpu_isa::avx512_core_bf16);
}

// Channels per block of the layout a precision runs in here, 0 where it cannot run: bf16 in
// nCdhw16c (AVX-512 BF16); float32 in nCdhw16c on AVX-512 CPUs and nCdhw8c on AVX2 ones (one
// channel block per vector register, the layouts oneDNN's own float32 kernels use there).
int64_t block_for(bool bf16) {
  if (bf16) return cpu_has_bf16_dot() ? kBf16Block : 0;
  if (cpu_has(dnnl::cpu_isa::avx512_core)) return 16;
  return cpu_has(dnnl::cpu_isa::avx2) ? 8 : 0;
}

// How the feature maps of one engine are stored: element type and channels per block.
struct Layout {
  dt type = dt::bf16;
  int64_t block = kBf16Block;
  bool bf16() const { return type == dt::bf16; }
  at::ScalarType scalar() const { return bf16() ? at::kBFloat16 : at::kFloat; }
  tag blocked() const { return block == 16 ? tag::nCdhw16c : tag::nCdhw8c; }
  int64_t padded(int64_t c) const { return (c + block - 1) / block * block; }
};

// Mirrored along depth, height, width (the mirror test-time augmentation's flips).
using Flip = std::array<bool, 3>;

// How a sample x (C, in) meets the network's input grid `net` (each side ≥ in's): x is read as if
// zero-padded at its far end to `net` (as sliding_window pads) and mirrored along the axes in
// `flip`; the logits are written back mirrored, for x's own voxels only.
struct SampleView {
  std::array<int64_t, 3> in{}, net{};
  Flip flip{false, false, false};
  // The net-grid index of index i along axis a, and the other way round (the same map).
  int64_t at(int a, int64_t i) const { return flip[a] ? net[a] - 1 - i : i; }
  int64_t in_voxels() const { return in[0] * in[1] * in[2]; }
};

// A feature map of one sample in the blocked layout: (1,C,D,H,W) stored as [C/B][D][H][W][B] for
// a block of B channels (nCdhw16c or nCdhw8c), bf16 or float32 elements. C is a multiple of B: a
// width that is not is padded with channels that stay zero (their weights are zero and their
// GroupNorm scale and shift are zero). oneDNN's own zero-padded channel blocks are not used: its
// bf16 kernels refuse them (measured: the reference convolution, ~1000x slower, for 8 channels in
// nCdhw16c).
//
// A map of one channel block can be convolved in place: its buffer has `spare` depth rows more
// than the map, which lies either at the buffer's start or at its end, and each in-place step
// (Engine::in_place) moves it to the other end.
struct Feature {
  at::Tensor data;  // c·d·h·w elements: the map, a view into `room`
  at::Tensor room;  // the buffer it lies in
  int64_t c = 0, d = 0, h = 0, w = 0;
  int64_t spare = 0, row0 = 0;  // depth rows of `room` beyond the map's; rows before the map
  Layout layout;
  int64_t spatial() const { return d * h * w; }
  int64_t row() const { return c * h * w; }  // elements per depth row
  template <class T>
  T* ptr() const {
    return static_cast<T*>(data.data_ptr());
  }
  void* ptr() const { return data.data_ptr(); }
  // The start of depth row z of the buffer (counted from the buffer's start).
  void* room_row(int64_t z) const {
    return static_cast<char*>(room.data_ptr()) + z * row() * room.element_size();
  }
  void* row_ptr(int64_t z) const {  // depth row z of the map
    return static_cast<char*>(data.data_ptr()) + z * row() * data.element_size();
  }
  void place(int64_t first_row) {
    row0 = first_row;
    data = room.narrow(0, first_row * row(), c * d * h * w);
  }
};

// Output depth rows per in-place slab, and how far each in-place step moves a map: far enough
// that a slab's output never lands on input rows that it or a later slab reads (kSlab + the
// kernel's half-width, here at most 1).
constexpr int64_t kSlab = 8;
constexpr int64_t kShift = kSlab + 1;

// n elements of `type` in memory of their own, mapped from the system rather than taken from the
// heap: the heap then holds only what a case allocates and frees (its images and
// probabilities), so these long-lived buffers do not fragment it. Transparent huge pages are
// asked for (madvise): a fresh map is faulted in 2 MB at a time (measured on this project's VM:
// first touch 2.4 s/GB instead of 3.9; the passes themselves ran at the same speed).
at::Tensor mapped(int64_t n, at::ScalarType type) {
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * c10::elementSize(type);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error("oneDNN", "cannot map " + std::to_string(bytes >> 20) + " MB of memory");
  madvise(p, bytes, MADV_HUGEPAGE);  // a hint: the kernel may refuse it
  return at::from_blob(
      p, {n}, [bytes](void* q) { munmap(q, bytes); }, at::TensorOptions().dtype(type));
}

// Buffers kept from one forward pass to the next. Every flip of a case, and most cases, ask for
// the same sizes, so a kept buffer is neither faulted in again (a fresh full-resolution bf16 map
// costs ~0.35 s of page faults on this project's VM) nor fragmented by the heap (without the
// pool a whole-crop pass grew the heap by the size of ~7 full-resolution maps while at most 3
// were live).
class BufferPool {
 public:
  explicit BufferPool(Layout layout) : layout(layout) {}
  const Layout layout;  // of every map made from the pool

  // n elements of the layout's type: the smallest free buffer that holds them, else a new one.
  at::Tensor get(int64_t n) {
    Slot* best = nullptr;
    for (Slot& s : slots_)
      if (s.free() && s.buffer.numel() >= n && (!best || s.buffer.numel() < best->buffer.numel()))
        best = &s;
    if (!best) {
      slots_.push_back({mapped(n, layout.scalar()), false});
      best = &slots_.back();
    }
    best->used = true;
    return best->buffer.narrow(0, 0, n);
  }

  // After a forward pass: the buffers it did not use are released (the sizes changed).
  void end_pass() {
    slots_.erase(std::remove_if(slots_.begin(), slots_.end(),
                                [](const Slot& s) { return !s.used && s.free(); }),
                 slots_.end());
    for (Slot& s : slots_) s.used = false;
  }

 private:
  struct Slot {
    at::Tensor buffer;
    bool used = false;                                               // in the current pass
    bool free() const { return buffer.storage().use_count() == 1; }  // no Feature holds it
  };
  std::vector<Slot> slots_;
};

// A map from the pool. Every map of one channel block gets kShift spare depth rows, so that it can
// be convolved in place and all of a level's maps have one size (the pool swaps them freely).
Feature make_feature(BufferPool& pool, int64_t c, int64_t d, int64_t h, int64_t w) {
  const int64_t spare = c == pool.layout.block ? kShift : 0;
  Feature f;
  f.room = pool.get(c * (d + spare) * h * w);
  f.c = c;
  f.d = d;
  f.h = h;
  f.w = w;
  f.spare = spare;
  f.layout = pool.layout;
  f.place(spare);
  return f;
}

// ---------------------------------------------------------------- the fused passes
// The bf16 passes run only where cpu_has_bf16_dot() holds, so they are written for AVX-512 (16
// lanes: one channel block per vector). The float32 passes are plain loops over a block's lanes,
// compiled twice: for AVX-512 (blocks of 16) and for AVX2 + FMA (blocks of 8), and run on the
// CPU whose block_for() chose that width.
#define KDSEG_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define KDSEG_AVX2 __attribute__((target("avx2,fma")))
#define KDSEG_INLINE inline __attribute__((always_inline))
// GCC 12 warns "__Y may be used uninitialized" inside its own AVX-512 headers wherever an
// intrinsic built on _mm512_undefined_*() is inlined (GCC bug 105593): not about this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

inline float to_float(uint16_t h) {
  return bf16_to_float(h);
}
inline float to_float(float f) {
  return f;
}

// Sums and sums of squares per lane of the voxels [p, end) of one channel block of B lanes, in
// float, into ps and pq.
template <class T, int64_t B>
KDSEG_INLINE void block_moments(const T* p, const T* end, float* ps, float* pq) {
  for (; p < end; p += B)
    for (int64_t j = 0; j < B; ++j) {
      const float v = to_float(p[j]);
      ps[j] += v;
      pq[j] += v * v;
    }
}
KDSEG_AVX512 void block_moments_f32x16(const float* p, const float* end, float* ps, float* pq) {
  block_moments<float, 16>(p, end, ps, pq);
}
KDSEG_AVX2 void block_moments_f32x8(const float* p, const float* end, float* ps, float* pq) {
  block_moments<float, 8>(p, end, ps, pq);
}

// Float partial sums and sums of squares of kChunk voxels of f (elements T, blocks of B) into
// part: [chunk][sum, sum of squares][B].
template <class T, int64_t B>
void chunk_moments(const Feature& f, std::vector<float>& part) {
  const int64_t s = f.spatial(), n_chunks = (s + kChunk - 1) / kChunk;
  const T* x = f.ptr<T>();
  at::parallel_for(0, (f.c / B) * n_chunks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_chunks, v0 = (i % n_chunks) * kChunk, v1 = std::min(s, v0 + kChunk);
      float ps[B] = {}, pq[B] = {};
      const T *p = x + (b * s + v0) * B, *p_end = x + (b * s + v1) * B;
      if constexpr (std::is_same_v<T, uint16_t>)
        block_moments<T, B>(p, p_end, ps, pq);
      else if constexpr (B == 16)
        block_moments_f32x16(p, p_end, ps, pq);
      else
        block_moments_f32x8(p, p_end, ps, pq);
      std::memcpy(&part[i * 2 * B], ps, sizeof ps);
      std::memcpy(&part[i * 2 * B + B], pq, sizeof pq);
    }
  });
}

// Per-channel sum and sum of squares of f, in double over float partial sums of kChunk voxels
// (a fixed split: the same bytes at any thread count).
void channel_moments(const Feature& f, std::vector<double>& sum, std::vector<double>& sum_sq) {
  const int64_t B = f.layout.block, s = f.spatial(), n_chunks = (s + kChunk - 1) / kChunk;
  const int64_t n_blocks = f.c / B;
  std::vector<float> part(static_cast<size_t>(n_blocks * n_chunks * 2 * B));
  if (f.layout.bf16())
    chunk_moments<uint16_t, 16>(f, part);
  else if (B == 16)
    chunk_moments<float, 16>(f, part);
  else
    chunk_moments<float, 8>(f, part);
  sum.assign(f.c, 0.0);
  sum_sq.assign(f.c, 0.0);
  for (int64_t i = 0; i < n_blocks * n_chunks; ++i)
    for (int64_t j = 0; j < B; ++j) {
      sum[(i / n_chunks) * B + j] += part[i * 2 * B + j];
      sum_sq[(i / n_chunks) * B + j] += part[i * 2 * B + B + j];
    }
}

// 16 bf16 → 16 float; 16 float → 16 bf16 rounded to nearest even; float rounded to bf16
// precision and kept as float.
KDSEG_AVX512 inline __m512 load_bf16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
KDSEG_AVX512 inline __m512i round_bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
}
KDSEG_AVX512 inline __m512 round_bf16(__m512 v) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(round_bits(v), _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}
KDSEG_AVX512 inline void store_bf16(uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtepi32_epi16(_mm512_srli_epi32(round_bits(v), 16)));
}

// Rows [begin, end) of (channel, depth, height) of the network's plain (C,D,H,W) bf16 input, from
// the float32 sample x as `view` places it, rounded to nearest even (as oneDNN's reorder and
// LibTorch's cast round).
KDSEG_AVX512 void to_bf16_rows(const float* x, uint16_t* y, const SampleView& view, int64_t begin,
                               int64_t end) {
  const auto &in = view.in, &net = view.net;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t r = view.at(1, row % net[1]), z = view.at(0, (row / net[1]) % net[0]);
    const int64_t c = row / (net[1] * net[0]);
    uint16_t* dst = y + row * net[2];
    if (z >= in[0] || r >= in[1]) {  // padding
      std::fill(dst, dst + net[2], uint16_t{0});
      continue;
    }
    const float* src = x + ((c * in[0] + z) * in[1] + r) * in[2];
    if (view.flip[2]) {
      for (int64_t v = 0; v < net[2]; ++v) {
        const int64_t sv = net[2] - 1 - v;
        dst[v] = float_to_bf16(sv < in[2] ? src[sv] : 0.0f);
      }
      continue;
    }
    for (int64_t v = 0; v < in[2]; v += 16) {
      const __mmask16 m = static_cast<__mmask16>(
          in[2] - v >= 16 ? 0xFFFF : (1u << static_cast<unsigned>(in[2] - v)) - 1u);
      const __m512i bits = _mm512_srli_epi32(round_bits(_mm512_maskz_loadu_ps(m, src + v)), 16);
      _mm256_mask_storeu_epi16(dst + v, m, _mm512_cvtepi32_epi16(bits));
    }
    std::fill(dst + in[2], dst + net[2], uint16_t{0});
  }
}

// The same rows in float32: the sample copied as `view` places it.
void to_float_rows(const float* x, float* y, const SampleView& view, int64_t begin, int64_t end) {
  const auto &in = view.in, &net = view.net;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t r = view.at(1, row % net[1]), z = view.at(0, (row / net[1]) % net[0]);
    const int64_t c = row / (net[1] * net[0]);
    float* dst = y + row * net[2];
    if (z >= in[0] || r >= in[1]) {  // padding
      std::fill(dst, dst + net[2], 0.0f);
      continue;
    }
    const float* src = x + ((c * in[0] + z) * in[1] + r) * in[2];
    for (int64_t v = 0; v < net[2]; ++v) {
      const int64_t sv = view.at(2, v);
      dst[v] = sv < in[2] ? src[sv] : 0.0f;
    }
  }
}

// y[o0, o1) ← [r +] [act](x · scale + shift), per lane of a channel block (act: x for x > 0,
// else slope · x: LeakyReLU, or ReLU at slope 0); y may be x. bf16, each step rounded to bf16
// as LibTorch's bf16 path rounds its separate ops.
template <bool Act, bool Res>
KDSEG_AVX512 void apply_norm_bf16(uint16_t* y, const uint16_t* x, const uint16_t* r, int64_t o0,
                                  int64_t o1, const float* scale, const float* shift, float slope) {
  const __m512 sc = _mm512_loadu_ps(scale), sh = _mm512_loadu_ps(shift);
  const __m512 k = _mm512_set1_ps(slope), zero = _mm512_setzero_ps();
  for (int64_t o = o0; o < o1; o += 16) {
    __m512 v = round_bf16(_mm512_fmadd_ps(load_bf16(x + o), sc, sh));
    if (Act) {
      const __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ);
      v = round_bf16(_mm512_mask_mul_ps(v, neg, v, k));
    }
    if (Res) v = _mm512_add_ps(v, load_bf16(r + o));
    store_bf16(y + o, v);
  }
}

// The same in float32, blocks of B.
template <int64_t B, bool Act, bool Res>
KDSEG_INLINE void apply_norm_f32(float* y, const float* x, const float* r, int64_t o0, int64_t o1,
                                 const float* scale, const float* shift, float slope) {
  // A block's lanes are read whole, then written whole: y may be x, and the compiler keeps one
  // vector per block (an element-by-element read-modify-write through two pointers that may alias
  // was left scalar: measured, the paper-size unet took 38-40 s per case in fp32 instead of 30).
  for (int64_t o = o0; o < o1; o += B) {
    float v[B];
    for (int64_t j = 0; j < B; ++j) {
      v[j] = x[o + j] * scale[j] + shift[j];
      if (Act) v[j] = v[j] <= 0.0f ? v[j] * slope : v[j];
      if (Res) v[j] += r[o + j];
    }
    for (int64_t j = 0; j < B; ++j) y[o + j] = v[j];
  }
}
template <bool Act, bool Res>
KDSEG_AVX512 void apply_norm_f32x16(float* y, const float* x, const float* r, int64_t o0,
                                    int64_t o1, const float* scale, const float* shift,
                                    float slope) {
  apply_norm_f32<16, Act, Res>(y, x, r, o0, o1, scale, shift, slope);
}
template <bool Act, bool Res>
KDSEG_AVX2 void apply_norm_f32x8(float* y, const float* x, const float* r, int64_t o0, int64_t o1,
                                 const float* scale, const float* shift, float slope) {
  apply_norm_f32<8, Act, Res>(y, x, r, o0, o1, scale, shift, slope);
}

template <bool Act, bool Res>
void apply_norm(const Layout& l, void* y, const void* x, const void* r, int64_t o0, int64_t o1,
                const float* scale, const float* shift, float slope) {
  if (l.bf16())
    apply_norm_bf16<Act, Res>(static_cast<uint16_t*>(y), static_cast<const uint16_t*>(x),
                              static_cast<const uint16_t*>(r), o0, o1, scale, shift, slope);
  else if (l.block == 16)
    apply_norm_f32x16<Act, Res>(static_cast<float*>(y), static_cast<const float*>(x),
                                static_cast<const float*>(r), o0, o1, scale, shift, slope);
  else
    apply_norm_f32x8<Act, Res>(static_cast<float*>(y), static_cast<const float*>(x),
                               static_cast<const float*>(r), o0, o1, scale, shift, slope);
}

// out = [residual +] [act](in · scale + shift) per channel (scale, shift: one per channel of
// in, padding included), in one pass; out may be in.
void apply_affine(const Feature& in, Feature& out, const std::vector<float>& scale,
                  const std::vector<float>& shift, bool act, float slope, const Feature* residual) {
  const int64_t s = in.spatial(), B = in.layout.block;
  const int64_t n_blocks = in.c / B, n_chunks = (s + kChunk - 1) / kChunk;
  const void* x = in.ptr();
  void* y = out.ptr();
  const void* r = residual ? residual->ptr() : nullptr;
  const Layout& l = in.layout;
  at::parallel_for(0, n_blocks * n_chunks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_chunks, v0 = (i % n_chunks) * kChunk, v1 = std::min(s, v0 + kChunk);
      const int64_t o0 = (b * s + v0) * B, o1 = (b * s + v1) * B;
      const float *sc = &scale[b * B], *sh = &shift[b * B];
      if (act && r)
        apply_norm<true, true>(l, y, x, r, o0, o1, sc, sh, slope);
      else if (act)
        apply_norm<true, false>(l, y, x, r, o0, o1, sc, sh, slope);
      else if (r)
        apply_norm<false, true>(l, y, x, r, o0, o1, sc, sh, slope);
      else
        apply_norm<false, false>(l, y, x, r, o0, o1, sc, sh, slope);
    }
  });
}

// out = [residual +] [act](GroupNorm(in)) over in's first `channels` channels (the rest is
// padding and stays zero); out may be in.
void norm_act_add(const Feature& in, Feature& out, int64_t channels, int64_t groups,
                  const float* gamma, const float* beta, double eps, bool act, float slope,
                  const Feature* residual) {
  std::vector<double> sum, sum_sq;
  channel_moments(in, sum, sum_sq);
  const int64_t cpg = channels / groups, s = in.spatial();
  std::vector<float> scale(in.c, 0.0f), shift(in.c, 0.0f);  // padding stays 0
  for (int64_t g = 0; g < groups; ++g) {
    double gs = 0, gq = 0;
    for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
      gs += sum[c];
      gq += sum_sq[c];
    }
    const double n = static_cast<double>(cpg * s), mean = gs / n;
    const double rstd = 1.0 / std::sqrt(std::max(gq / n - mean * mean, 0.0) + eps);
    for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
      scale[c] = static_cast<float>(gamma[c] * rstd);
      shift[c] = static_cast<float>(beta[c] - mean * gamma[c] * rstd);
    }
  }
  apply_affine(in, out, scale, shift, act, slope, residual);
}

// x ← x + r, elementwise (bf16: rounded once, as LibTorch's add).
void add_into(Feature& x, const Feature& r) {
  apply_affine(x, x, std::vector<float>(x.c, 1.0f), std::vector<float>(x.c, 0.0f), false, 0.0f, &r);
}

// Trilinear ×2 (align_corners false, as upsample2x; its taps) of `in`, then LeakyReLU where
// `leaky` (the student; not unet or resunet): one output voxel from its 8 neighbours, per axis
// weights 0.75 / 0.25 (the border voxel repeated). Rows [begin, end) of (channel block, output
// depth) of the upsampling. `out` holds the output depth rows from d0 on (all of them, or one
// in-place slab).
KDSEG_AVX512 void upsample_rows_bf16(const Feature& in, Feature& out, int64_t d0,
                                     const UpsampleTaps& td, const UpsampleTaps& th,
                                     const UpsampleTaps& tw, int64_t begin, int64_t end,
                                     bool leaky) {
  const int64_t s_in = in.spatial();
  const uint16_t* x = in.ptr<uint16_t>();
  uint16_t* y = out.ptr<uint16_t>();
  const __m512 slope = _mm512_set1_ps(kSlope), zero = _mm512_setzero_ps();
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / out.d, od = row % out.d;
    const uint16_t* xb = x + b * s_in * 16;
    const int64_t dz[2] = {td.i0[d0 + od], td.i1[d0 + od]};
    const float wz[2] = {td.w0[d0 + od], td.w1[d0 + od]};
    for (int64_t oh = 0; oh < out.h; ++oh) {
      const int64_t hy[2] = {th.i0[oh], th.i1[oh]};
      const float wy[2] = {th.w0[oh], th.w1[oh]};
      uint16_t* yr = y + ((b * out.d + od) * out.h + oh) * out.w * 16;
      for (int64_t ow = 0; ow < out.w; ++ow) {
        const __m512 w0 = _mm512_set1_ps(tw.w0[ow]), w1 = _mm512_set1_ps(tw.w1[ow]);
        __m512 acc = zero;
        for (int a = 0; a < 2; ++a)
          for (int c = 0; c < 2; ++c) {
            const uint16_t* p = xb + (dz[a] * in.h + hy[c]) * in.w * 16;
            const __m512 pair = _mm512_fmadd_ps(w0, load_bf16(p + tw.i0[ow] * 16),
                                                _mm512_mul_ps(w1, load_bf16(p + tw.i1[ow] * 16)));
            acc = _mm512_fmadd_ps(_mm512_set1_ps(wz[a] * wy[c]), pair, acc);
          }
        acc = round_bf16(acc);  // LibTorch: interpolate in float32, round to bf16, then LeakyReLU
        const __mmask16 neg = _mm512_cmp_ps_mask(acc, zero, _CMP_LE_OQ);
        store_bf16(yr + ow * 16, leaky ? _mm512_mask_mul_ps(acc, neg, acc, slope) : acc);
      }
    }
  }
}

// The same in float32, blocks of B.
template <int64_t B>
KDSEG_INLINE void upsample_rows_f32(const Feature& in, Feature& out, int64_t d0,
                                    const UpsampleTaps& td, const UpsampleTaps& th,
                                    const UpsampleTaps& tw, int64_t begin, int64_t end,
                                    bool leaky) {
  const int64_t s_in = in.spatial();
  const float* x = in.ptr<float>();
  float* y = out.ptr<float>();
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / out.d, od = row % out.d;
    const float* xb = x + b * s_in * B;
    const int64_t dz[2] = {td.i0[d0 + od], td.i1[d0 + od]};
    const float wz[2] = {td.w0[d0 + od], td.w1[d0 + od]};
    for (int64_t oh = 0; oh < out.h; ++oh) {
      const int64_t hy[2] = {th.i0[oh], th.i1[oh]};
      const float wy[2] = {th.w0[oh], th.w1[oh]};
      float* yr = y + ((b * out.d + od) * out.h + oh) * out.w * B;
      for (int64_t ow = 0; ow < out.w; ++ow) {
        const float w0 = tw.w0[ow], w1 = tw.w1[ow];
        float acc[B] = {};
        for (int a = 0; a < 2; ++a)
          for (int c = 0; c < 2; ++c) {
            const float* p0 = xb + ((dz[a] * in.h + hy[c]) * in.w + tw.i0[ow]) * B;
            const float* p1 = xb + ((dz[a] * in.h + hy[c]) * in.w + tw.i1[ow]) * B;
            const float wzy = wz[a] * wy[c];
            for (int64_t j = 0; j < B; ++j) acc[j] += wzy * (w0 * p0[j] + w1 * p1[j]);
          }
        if (leaky)
          for (int64_t j = 0; j < B; ++j)
            yr[ow * B + j] = acc[j] <= 0.0f ? acc[j] * kSlope : acc[j];
        else
          for (int64_t j = 0; j < B; ++j) yr[ow * B + j] = acc[j];
      }
    }
  }
}
KDSEG_AVX512 void upsample_rows_f32x16(const Feature& in, Feature& out, int64_t d0,
                                       const UpsampleTaps& td, const UpsampleTaps& th,
                                       const UpsampleTaps& tw, int64_t begin, int64_t end,
                                       bool leaky) {
  upsample_rows_f32<16>(in, out, d0, td, th, tw, begin, end, leaky);
}
KDSEG_AVX2 void upsample_rows_f32x8(const Feature& in, Feature& out, int64_t d0,
                                    const UpsampleTaps& td, const UpsampleTaps& th,
                                    const UpsampleTaps& tw, int64_t begin, int64_t end,
                                    bool leaky) {
  upsample_rows_f32<8>(in, out, d0, td, th, tw, begin, end, leaky);
}

void upsample_rows(const Feature& in, Feature& out, int64_t d0, const UpsampleTaps& td,
                   const UpsampleTaps& th, const UpsampleTaps& tw, int64_t begin, int64_t end,
                   bool leaky) {
  if (in.layout.bf16())
    upsample_rows_bf16(in, out, d0, td, th, tw, begin, end, leaky);
  else if (in.layout.block == 16)
    upsample_rows_f32x16(in, out, d0, td, th, tw, begin, end, leaky);
  else
    upsample_rows_f32x8(in, out, d0, td, th, tw, begin, end, leaky);
}

Feature upsample2x(const Feature& in, BufferPool& pool, bool leaky) {
  Feature out = make_feature(pool, in.c, 2 * in.d, 2 * in.h, 2 * in.w);
  const UpsampleTaps td = upsample_taps(in.d), th = upsample_taps(in.h), tw = upsample_taps(in.w);
  at::parallel_for(0, (in.c / in.layout.block) * out.d, 1, [&](int64_t begin, int64_t end) {
    upsample_rows(in, out, 0, td, th, tw, begin, end, leaky);
  });
  return out;
}

// ---------------------------------------------------------------- convolutions
// One convolution of a network (weights in PyTorch's (O,I,k,k,k) float32), its oneDNN
// primitive for the last input size it saw, and its weights packed for that primitive.
struct Conv {
  at::Tensor weight;  // (oc, ic, k, k, k) float32, contiguous, zero-padded to whole blocks
  at::Tensor bias;    // (oc) float32, or undefined
  int64_t ic = 0, oc = 0, k = 3, stride = 1;
  // cached for the last shapes
  std::array<int64_t, 3> in_size{0, 0, 0};
  bool sum = false;
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  dnnl::memory packed;  // weights in pd.weights_desc()
  dnnl::memory bias_mem;
  // In-place slabs: by (input rows, output rows, depth padding before, after, height, width, sum).
  struct Slab {
    dnnl::convolution_forward prim;
    dnnl::memory packed;
  };
  std::map<std::array<int64_t, 7>, Slab> slabs;

  std::array<int64_t, 3> out_size(const std::array<int64_t, 3>& s) const {
    return {s[0] / stride, s[1] / stride, s[2] / stride};
  }
};

// What the head's logits become in the output buffer: the logits, or the mean of their sigmoids
// over the flips of the mirror test-time augmentation, summed as the flips come: y = σ(l) at the
// first, y += σ(l) after it, y = (y + σ(l)) / n at the last. The same float operations in the
// same order as with_mirror_tta's sigmoid, add_ and div_, with LibTorch's own sigmoid: the
// logits are bf16, so σ is a table of LibTorch's sigmoid of every bf16 value.
struct Output {
  enum Step { kLogits, kFirst, kAdd, kLast };
  bool probabilities = false;
  size_t k = 0, n = 1;  // this flip, of n
  Step step() const {
    if (!probabilities) return kLogits;
    return k == 0 ? kFirst : k + 1 == n ? kLast : kAdd;
  }
};

const float* sigmoid_of_bf16() {
  static const at::Tensor table = [] {
    std::vector<uint32_t> bits(65536);  // every bf16 value, as float32 bits
    for (uint32_t i = 0; i < 65536; ++i) bits[i] = i << 16;
    return at::sigmoid(at::from_blob(bits.data(), {65536}, at::kFloat));
  }();
  return table.data_ptr<float>();
}

// The first n_out channels of the blocked map `out` (on the network's grid, elements T) → y
// (n_out, view.in). Float32 maps: the logits only (kLogits).
template <Output::Step S, class T>
void copy_out(const Feature& out, int64_t n_out, const SampleView& view, const Output& to,
              float* y) {
  const int64_t s = out.spatial(), s_out = view.in_voxels(), B = out.layout.block;
  const auto& size = view.in;
  const T* x = out.ptr<T>();
  const float* sig = sigmoid_of_bf16();
  const float n = static_cast<float>(to.n);
  at::parallel_for(0, size[0] * size[1], 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // row by row: one pass over memory
      const int64_t z = view.at(0, row / size[1]), r = view.at(1, row % size[1]);
      for (int64_t b0 = 0; b0 < n_out; b0 += B) {
        const int64_t lanes = std::min(B, n_out - b0);
        const T* xr = x + (b0 * s + (z * out.h + r) * out.w) * B;
        float* yr = y + b0 * s_out + row * size[2];
        for (int64_t v = 0; v < size[2]; ++v) {
          const T* p = xr + view.at(2, v) * B;
          for (int64_t j = 0; j < lanes; ++j) {
            float& o = yr[j * s_out + v];
            if constexpr (S == Output::kLogits) {
              o = to_float(p[j]);
            } else {
              static_assert(std::is_same_v<T, uint16_t>, "sigmoid table for bf16 only");
              if (S == Output::kFirst) o = sig[p[j]];
              if (S == Output::kAdd) o += sig[p[j]];
              if (S == Output::kLast) o = (o + sig[p[j]]) / n;
            }
          }
        }
      }
    }
  });
}

class Engine {
 public:
  explicit Engine(Layout layout)
      : pool(layout), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  BufferPool pool;  // every feature map's memory

  // How c's src and dst are described to oneDNN. At one block of 16 channels in and out, the
  // blocked layout's bytes are those of channels-last (ndhwc); oneDNN 2.6 runs a float32 3×3×3
  // convolution in that form with its brgemm kernels (measured on this project's VM at 16
  // channels, 176×208×152: 170 ms against 228 ms for nCdhw16c; bf16 the other way round, 99 ms
  // against 87).
  tag conv_tag(const Conv& c) const {
    const Layout& l = pool.layout;
    const bool channels_last = !l.bf16() && l.block == 16 && c.ic == 16 && c.oc == 16 && c.k == 3;
    return channels_last ? tag::ndhwc : l.blocked();
  }

  // c's primitive for a src of `size` (blocked, or plain (N,C,D,H,W) when src_plain) with depth
  // padding pad_d before and after (height and width: the kernel's half-width).
  dnnl::convolution_forward::primitive_desc primitive_for(const Conv& c,
                                                          const std::array<int64_t, 3>& size,
                                                          bool src_plain, bool sum,
                                                          std::array<int64_t, 2> pad_d) {
    const int64_t pad = c.k % 2 == 1 ? c.k / 2 : 0;
    std::array<int64_t, 3> o = c.out_size(size);
    o[0] = (size[0] + pad_d[0] + pad_d[1] - c.k) / c.stride + 1;
    const Layout& l = pool.layout;
    const dnnl::memory::desc src({1, c.ic, size[0], size[1], size[2]}, l.type,
                                 src_plain ? tag::ncdhw : conv_tag(c));
    const dnnl::memory::desc wei({c.oc, c.ic, c.k, c.k, c.k}, l.type, tag::any);
    const dnnl::memory::desc dst({1, c.oc, o[0], o[1], o[2]}, l.type, conv_tag(c));
    const dnnl::memory::dims strides{c.stride, c.stride, c.stride};
    const dnnl::memory::dims pad_l{pad_d[0], pad, pad}, pad_r{pad_d[1], pad, pad};
    dnnl::primitive_attr attr;
    if (sum) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    dnnl::convolution_forward::desc d =
        c.bias.defined()
            ? dnnl::convolution_forward::desc(
                  dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src, wei,
                  dnnl::memory::desc({c.oc}, dt::f32, tag::x), dst, strides, pad_l, pad_r)
            : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                              dnnl::algorithm::convolution_direct, src, wei, dst,
                                              strides, pad_l, pad_r);
    return dnnl::convolution_forward::primitive_desc(d, attr, engine_);
  }

  // c's weights packed as `pd` wants them (`have` itself when it already is), and its bias bound.
  dnnl::memory pack(Conv& c, const dnnl::convolution_forward::primitive_desc& pd,
                    const dnnl::memory& have) {
    if (c.bias.defined() && !c.bias_mem)
      c.bias_mem = dnnl::memory({{c.oc}, dt::f32, tag::x}, engine_, c.bias.data_ptr());
    if (have && have.get_desc() == pd.weights_desc()) return have;
    const dnnl::memory::desc user({c.oc, c.ic, c.k, c.k, c.k}, dt::f32, tag::oidhw);
    dnnl::memory src_w(user, engine_, c.weight.data_ptr());
    dnnl::memory packed(pd.weights_desc(), engine_);
    dnnl::reorder(src_w, packed).execute(stream_, src_w, packed);
    return packed;
  }

  // Prepares c for inputs of `size` (src blocked, or plain (N,C,D,H,W) when src_plain): the
  // primitive and packed weights, reused while the size stays the same.
  void prepare(Conv& c, const std::array<int64_t, 3>& size, bool src_plain, bool sum) {
    if (c.prim && c.in_size == size && c.sum == sum) return;
    const int64_t pad = c.k % 2 == 1 ? c.k / 2 : 0;
    c.pd = primitive_for(c, size, src_plain, sum, {pad, pad});
    c.prim = dnnl::convolution_forward(c.pd);
    c.packed = pack(c, c.pd, c.packed);
    c.in_size = size;
    c.sum = sum;
  }

  // Whether c can run in place on x (one channel block in and out, stride 1, a kernel of 1 or 3,
  // and room to move).
  bool can_in_place(const Conv& c, const Feature& x) const {
    const int64_t b = pool.layout.block;
    return c.ic == b && c.oc == b && c.stride == 1 && (c.k == 1 || c.k == 3) && x.c == b &&
           x.spare >= kShift;
  }

  // x ← f(x) in x's own buffer, slab by slab: write(z0, z1, dst) puts output depth rows [z0, z1)
  // at dst, reading x where it lies. Each slab's rows go kShift rows away from where the map
  // lies: towards the buffer's start when the map lies at its end (slabs first to last), else
  // towards its end (last to first); either way no slab lands on rows that it or a slab after it
  // still reads. The map then lies at the other end.
  template <class Write>
  static void in_place(Feature& x, Write write) {
    const bool down = x.row0 >= kShift;
    const int64_t to = down ? x.row0 - kShift : x.row0 + kShift;
    const int64_t n = (x.d + kSlab - 1) / kSlab;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = down ? k : n - 1 - k;
      const int64_t z0 = i * kSlab, z1 = std::min(x.d, z0 + kSlab);
      write(z0, z1, x.room_row(to + z0));
    }
    x.place(to);
  }

  // Output depth rows [z0, z1) of c over the map `in` (rows of a whole map, its own padding at
  // its ends) into dst, or added to dst (sum).
  void conv_rows(Conv& c, const Feature& in, int64_t z0, int64_t z1, void* dst, bool sum) {
    const int64_t p = c.k / 2;
    const int64_t in0 = std::max<int64_t>(0, z0 - p), in1 = std::min(in.d, z1 + p);
    const std::array<int64_t, 2> pad_d{p - (z0 - in0), p - (in1 - z1)};
    const std::array<int64_t, 7> key{in1 - in0, z1 - z0, pad_d[0], pad_d[1], in.h, in.w, sum};
    auto it = c.slabs.find(key);
    if (it == c.slabs.end()) {
      const auto pd = primitive_for(c, {in1 - in0, in.h, in.w}, false, sum, pad_d);
      it = c.slabs.emplace(key, Conv::Slab{dnnl::convolution_forward(pd), pack(c, pd, c.packed)})
               .first;
    }
    const Layout& l = pool.layout;
    dnnl::memory src({{1, in.c, in1 - in0, in.h, in.w}, l.type, conv_tag(c)}, engine_,
                     in.row_ptr(in0));
    dnnl::memory out({{1, c.oc, z1 - z0, in.h, in.w}, l.type, conv_tag(c)}, engine_, dst);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, it->second.packed}, {DNNL_ARG_DST, out}};
    if (c.bias_mem) args[DNNL_ARG_BIAS] = c.bias_mem;
    it->second.prim.execute(stream_, args);
    stream_.wait();
  }

  // x ← c(x), in place (can_in_place(c, x)).
  void conv_in_place(Conv& c, Feature& x) {
    in_place(x, [&](int64_t z0, int64_t z1, void* dst) { conv_rows(c, x, z0, z1, dst, false); });
  }

  // skip ← merge_skip(skip) + merge_up(leaky(up×2(u))), in place in skip's buffer, the
  // upsampling made slab by slab (no full-resolution copy of it).
  void merge_in_place(Conv& merge_skip, Conv& merge_up, Feature& skip, const Feature& u) {
    const UpsampleTaps td = upsample_taps(u.d), th = upsample_taps(u.h), tw = upsample_taps(u.w);
    in_place(skip, [&](int64_t z0, int64_t z1, void* dst) {
      Feature up = make_feature(pool, u.c, z1 - z0, 2 * u.h, 2 * u.w);  // a slab's rows
      at::parallel_for(0, up.d, 1, [&](int64_t begin, int64_t end) {
        upsample_rows(u, up, z0, td, th, tw, begin, end, true);
      });
      conv_rows(merge_skip, skip, z0, z1, dst, false);
      conv_rows(merge_up, up, 0, z1 - z0, dst, true);
    });
  }

  // dst = conv(in), or dst += conv(in) when `into` is given (the sum post-op).
  Feature conv(Conv& c, const Feature& in, Feature* into = nullptr) {
    prepare(c, {in.d, in.h, in.w}, false, into != nullptr);
    const auto o = c.out_size({in.d, in.h, in.w});
    Feature out = into ? *into : make_feature(pool, c.oc, o[0], o[1], o[2]);
    dnnl::memory src(c.pd.src_desc(), engine_, in.ptr()), dst(c.pd.dst_desc(), engine_, out.ptr());
    execute(c, src, dst);
    return out;
  }

  // The first convolution, from a plain (C,D,H,W) bf16 sample.
  Feature conv_first(Conv& c, const at::Tensor& x, const std::array<int64_t, 3>& size) {
    prepare(c, size, true, false);
    dnnl::memory src(c.pd.src_desc(), engine_, x.data_ptr());
    Feature out = make_feature(pool, c.oc, size[0], size[1], size[2]);
    dnnl::memory dst(c.pd.dst_desc(), engine_, out.ptr());
    execute(c, src, dst);
    return out;
  }

  // The head: its first `n_out` channels (the rest are zero-weight padding) into a plain
  // (C, view.in) float32 buffer, placed back as `view` says, as `to` says. bf16 logits, as
  // LibTorch's bf16 autocast head gives; a float32 destination would have been 16 padded float32
  // channels (2x the memory, same speed).
  void conv_to_plain(Conv& c, const Feature& in, int64_t n_out, const SampleView& view,
                     const Output& to, float* y) {
    const Feature out = conv(c, in);
    if (!out.layout.bf16()) {
      // float32 logits; their probabilities with LibTorch's own sigmoid, add_ and div_.
      if (to.step() == Output::kLogits)
        return copy_out<Output::kLogits, float>(out, n_out, view, to, y);
      const at::Tensor logits = at::empty({n_out, view.in_voxels()}, at::kFloat);
      copy_out<Output::kLogits, float>(out, n_out, view, to, logits.data_ptr<float>());
      at::Tensor acc = at::from_blob(y, {n_out, view.in_voxels()}, at::kFloat);
      const at::Tensor p = at::sigmoid(logits);
      if (to.step() == Output::kFirst) acc.copy_(p);
      if (to.step() == Output::kAdd) acc.add_(p);
      if (to.step() == Output::kLast) acc.add_(p).div_(static_cast<double>(to.n));
      return;
    }
    switch (to.step()) {
      case Output::kLogits:
        return copy_out<Output::kLogits, uint16_t>(out, n_out, view, to, y);
      case Output::kFirst:
        return copy_out<Output::kFirst, uint16_t>(out, n_out, view, to, y);
      case Output::kAdd:
        return copy_out<Output::kAdd, uint16_t>(out, n_out, view, to, y);
      case Output::kLast:
        return copy_out<Output::kLast, uint16_t>(out, n_out, view, to, y);
    }
  }

 private:
  void execute(Conv& c, dnnl::memory& src, dnnl::memory& dst) {
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, c.packed}, {DNNL_ARG_DST, dst}};
    if (c.bias_mem) args[DNNL_ARG_BIAS] = c.bias_mem;
    c.prim.execute(stream_, args);
    stream_.wait();
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
};

struct NormParams {
  at::Tensor gamma, beta;  // (C) float32, C = the width (not padded)
  int64_t groups = 8;
  double eps = 1e-5;
};

// In place: f = [residual +] [act](norm(f)), act LeakyReLU (slope 0.01) or ReLU (slope 0).
void norm_act_add(Feature& f, const NormParams& n, bool act, const Feature* residual,
                  float slope = kSlope) {
  norm_act_add(f, f, n.gamma.size(0), n.groups, n.gamma.data_ptr<float>(), n.beta.data_ptr<float>(),
               n.eps, act, slope, residual);
}

// A new map: act(norm(x)), x kept (the pre-activation blocks' input stays for their residual).
Feature norm_act_copy(const Feature& x, const NormParams& n, float slope, BufferPool& pool) {
  Feature out = make_feature(pool, x.c, x.d, x.h, x.w);
  norm_act_add(x, out, n.gamma.size(0), n.groups, n.gamma.data_ptr<float>(),
               n.beta.data_ptr<float>(), n.eps, true, slope, nullptr);
  return out;
}

struct Block {  // residual block: two convolutions and their norms (student: post-activation)
  Conv conv1, conv2;
  NormParams norm1, norm2;
};

// The levels of the student and resunet: per level [a convolution strided 2] and residual
// blocks; per decoder level (finest first) a 1×1 up convolution and blocks.
struct ResidualLevels {
  std::vector<Conv> down, up;
  std::vector<std::vector<Block> > encoder, decoder;
};

}  // namespace

std::string onednn_unavailable(const SegNetImpl& net, bool bf16) {
  if (!dynamic_cast<const StudentImpl*>(&net) && !dynamic_cast<const UNetImpl*>(&net) &&
      !dynamic_cast<const ResUNetImpl*>(&net))
    return "the oneDNN path runs student, unet, resunet and resunet-vae, not " + net.arch();
  if (block_for(bf16) > 0) return "";
  if (bf16) return "this CPU has no native bf16 dot products (AVX-512 BF16) for oneDNN";
  return "this CPU has neither AVX-512 nor AVX2 for oneDNN's float32 kernels";
}

int64_t onednn_block(bool bf16) {
  return block_for(bf16);
}

// What every network's pass shares: the engine, the flips and padding around a sample's pass
// (run), the input convolution; each network's layers and their order are its own
// (sample_forward).
struct OneDnnNet::Impl {
  Impl(Layout layout, std::string arch) : engine(layout), arch(std::move(arch)) {}
  virtual ~Impl() = default;
  Engine engine;
  std::string arch;  // for messages, e.g. "student"
  int64_t in_channels = 4, out_channels = 3;
  int64_t stride = 8;  // the network's total downsampling, e.g. 8
  std::mutex mutex;

  // One sample x (C, view.in) float32, as `view` places it on the network's grid → its logits
  // (out, view.in) float32 into y, as `to` says.
  virtual void sample_forward(const float* x, const SampleView& view, const Output& to,
                              float* y) = 0;

  // The network's first convolution c over the sample x as `view` places it (converted to the
  // layout's element type, plain (C,D,H,W)).
  Feature first_conv(Conv& c, const float* x, const SampleView& view) {
    const auto& size = view.net;
    const int64_t rows = in_channels * size[0] * size[1];
    const at::Tensor input = engine.pool.get(rows * size[2]);
    const bool bf16 = engine.pool.layout.bf16();
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      if (bf16)
        to_bf16_rows(x, static_cast<uint16_t*>(input.data_ptr()), view, begin, end);
      else
        to_float_rows(x, input.data_ptr<float>(), view, begin, end);
    });
    return engine.conv_first(c, input, size);
  }

  // Each sample of `input` through the network once per flip, on the grid `padded_to` ({0,0,0}:
  // the input's own): the logits (one flip), or the mean of their sigmoids (`probabilities`).
  at::Tensor run(const at::Tensor& input, const std::vector<Flip>& flips,
                 const std::array<int64_t, 3>& padded_to, bool probabilities) {
    if (!input.device().is_cpu())
      throw Error("oneDNN " + arch, "expected a CPU tensor, got one on " + input.device().str());
    SampleView view;
    const bool padded = padded_to != std::array<int64_t, 3>{0, 0, 0};
    check_input(input, in_channels, padded ? 1 : stride, "oneDNN " + arch);
    for (int a = 0; a < 3; ++a) {
      view.in[a] = input.size(2 + a);
      view.net[a] = padded ? padded_to[a] : view.in[a];
      if (view.net[a] < view.in[a] || view.net[a] % stride != 0)
        throw Error("oneDNN " + arch, "cannot pad a side of " + std::to_string(view.in[a]) +
                                          " to " + std::to_string(view.net[a]) +
                                          " (at least as large, a multiple of " +
                                          std::to_string(stride) + ")");
    }
    const at::Tensor x = input.to(at::kFloat).contiguous();
    at::Tensor y =
        at::empty({x.size(0), out_channels, view.in[0], view.in[1], view.in[2]}, x.options());
    std::lock_guard<std::mutex> lock(mutex);
    for (int64_t n = 0; n < x.size(0); ++n)
      for (size_t k = 0; k < flips.size(); ++k) {
        view.flip = flips[k];
        sample_forward(x[n].data_ptr<float>(), view, Output{probabilities, k, flips.size()},
                       y[n].data_ptr<float>());
      }
    return y;
  }
};

namespace {

struct StudentProgram : OneDnnNet::Impl, ResidualLevels {
  explicit StudentProgram(Layout layout) : Impl(layout, "student") {}
  StudentOptions options;
  Conv conv_in, head;
  NormParams norm_in;
  std::vector<Conv> merge_skip, merge_up;

  // x ← the block's output. At one channel block the second convolution runs in place: two maps
  // of the level live instead of three.
  void block_forward(Block& b, Feature& x) {
    Feature t = engine.conv(b.conv1, x);
    norm_act_add(t, b.norm1, true, nullptr);
    if (engine.can_in_place(b.conv2, t)) {
      engine.conv_in_place(b.conv2, t);
      norm_act_add(t, b.norm2, true, &x);
      x = std::move(t);
      return;
    }
    Feature y = engine.conv(b.conv2, t);
    t = Feature();
    norm_act_add(y, b.norm2, true, &x);
    x = std::move(y);
  }

  // One sample x (C, view.in) float32, as `view` places it on the network's grid → its logits
  // (out, view.in) float32 into y, as `to` says.
  void sample_forward(const float* x, const SampleView& view, const Output& to, float* y) override {
    const size_t n_levels = options.widths.size();
    std::vector<Feature> features;
    Feature h = first_conv(conv_in, x, view);
    norm_act_add(h, norm_in, false, nullptr);
    for (size_t l = 0; l < n_levels; ++l) {
      if (l > 0) h = engine.conv(down[l - 1], features.back());
      for (Block& b : encoder[l]) block_forward(b, h);
      features.push_back(h);
      h = Feature();
    }
    h = std::move(features.back());
    features.pop_back();
    for (size_t i = n_levels - 1; i-- > 0;) {
      Feature u = engine.conv(up[i], h);  // 1×1 at the coarse level
      h = Feature();
      if (engine.can_in_place(merge_skip[i], features[i]) &&
          engine.can_in_place(merge_up[i], features[i]) && u.c == engine.pool.layout.block) {
        Feature m = std::move(features[i]);
        engine.merge_in_place(merge_skip[i], merge_up[i], m, u);
        u = Feature();
        for (Block& b : decoder[i]) block_forward(b, m);
        h = std::move(m);
        continue;
      }
      Feature up_full = upsample2x(u, engine.pool, true);
      u = Feature();
      Feature m = engine.conv(merge_skip[i], features[i]);
      features[i] = Feature();
      engine.conv(merge_up[i], up_full, &m);
      up_full = Feature();
      for (Block& b : decoder[i]) block_forward(b, m);
      h = std::move(m);
    }
    engine.conv_to_plain(head, h, out_channels, view, to, y);
    engine.pool.end_pass();
  }
};

// unet: per level two (conv 3³ → InstanceNorm → LeakyReLU), the first strided 2 below the top;
// the decoder's up (1×1 conv at the coarse level, trilinear ×2, no activation), its first
// convolution over [skip, up] as two convolutions summed; the 1×1 head with bias.
struct UNetProgram : OneDnnNet::Impl {
  explicit UNetProgram(Layout layout) : Impl(layout, "unet") {}
  struct Stage {
    Conv conv1, conv2;
    Conv conv1_up;  // decoder stages: conv1 takes the skip half of the input, conv1_up the rest
    NormParams norm1, norm2;
  };
  std::vector<Stage> encoder, decoder;
  std::vector<Conv> up;
  Conv head;

  void stage_rest(Stage& s, Feature& h) {  // h ← act(n2(c2(h))) after the first conv + norm
    norm_act_add(h, s.norm1, true, nullptr);
    Feature y = engine.conv(s.conv2, h);
    h = Feature();
    norm_act_add(y, s.norm2, true, nullptr);
    h = std::move(y);
  }

  void sample_forward(const float* x, const SampleView& view, const Output& to, float* y) override {
    std::vector<Feature> features;
    Feature h = first_conv(encoder[0].conv1, x, view);
    stage_rest(encoder[0], h);
    features.push_back(std::move(h));
    for (size_t l = 1; l < encoder.size(); ++l) {
      h = engine.conv(encoder[l].conv1, features.back());
      stage_rest(encoder[l], h);
      features.push_back(std::move(h));
    }
    h = std::move(features.back());
    features.pop_back();
    for (size_t i = decoder.size(); i-- > 0;) {
      Feature u = engine.conv(up[i], h);  // 1×1 at the coarse level
      h = Feature();
      Feature up_full = upsample2x(u, engine.pool, false);
      u = Feature();
      Feature m = engine.conv(decoder[i].conv1, features[i]);
      features[i] = Feature();
      engine.conv(decoder[i].conv1_up, up_full, &m);
      up_full = Feature();
      stage_rest(decoder[i], m);
      h = std::move(m);
    }
    engine.conv_to_plain(head, h, out_channels, view, to, y);
    engine.pool.end_pass();
  }
};

// resunet (and resunet-vae, whose VAE branch runs in training only): the input convolution; per
// level [a 3³ convolution strided 2] and pre-activation residual blocks x + c2(relu(n2(c1(relu(
// n1(x)))))), the residual added by the second convolution itself (oneDNN's sum post-op); the
// decoder's up (1×1 conv at the coarse level, trilinear ×2) plus the skip, then blocks; the head
// GroupNorm → ReLU → 1×1 conv with bias.
struct ResUNetProgram : OneDnnNet::Impl, ResidualLevels {
  explicit ResUNetProgram(Layout layout, const std::string& arch) : Impl(layout, arch) {}
  Conv conv_in, head;
  NormParams head_norm;

  void block_forward(Block& b, Feature& x) {  // x ← x + c2(relu(n2(c1(relu(n1(x))))))
    Feature t = norm_act_copy(x, b.norm1, 0.0f, engine.pool);
    Feature u = engine.conv(b.conv1, t);
    t = Feature();
    norm_act_add(u, b.norm2, true, nullptr, 0.0f);
    engine.conv(b.conv2, u, &x);
  }

  void sample_forward(const float* x, const SampleView& view, const Output& to, float* y) override {
    std::vector<Feature> features;
    Feature h = first_conv(conv_in, x, view);
    for (size_t l = 0; l < encoder.size(); ++l) {
      if (l > 0) h = engine.conv(down[l - 1], features.back());
      for (Block& b : encoder[l]) block_forward(b, h);
      features.push_back(h);
      h = Feature();
    }
    h = std::move(features.back());
    features.pop_back();
    for (size_t i = decoder.size(); i-- > 0;) {
      Feature u = engine.conv(up[i], h);  // 1×1 at the coarse level
      h = upsample2x(u, engine.pool, false);
      u = Feature();
      add_into(h, features[i]);
      features[i] = Feature();
      for (Block& b : decoder[i]) block_forward(b, h);
    }
    Feature t = norm_act_copy(h, head_norm, 0.0f, engine.pool);
    h = Feature();
    engine.conv_to_plain(head, t, out_channels, view, to, y);
    engine.pool.end_pass();
  }
};

// (O,I,k,k,k) → zero-padded to whole channel blocks: O always (the head's 3 outputs too), I
// where the input is a feature map.
at::Tensor pad_weight(const at::Tensor& w, const Layout& l, bool pad_in) {
  const int64_t i = pad_in ? l.padded(w.size(1)) : w.size(1);
  at::Tensor out = at::zeros({l.padded(w.size(0)), i, w.size(2), w.size(3), w.size(4)}, at::kFloat);
  out.narrow(0, 0, w.size(0)).narrow(1, 0, w.size(1)).copy_(w);
  return out;
}

// A convolution of weights (O,I,k,k,k); pad_in false: the input convolution (its input is the
// plain 4-channel image).
Conv conv_of(const at::Tensor& weight, const Layout& l, int64_t stride = 1, bool pad_in = true) {
  Conv c;
  c.weight = pad_weight(weight.detach().to(at::kFloat), l, pad_in);
  c.oc = c.weight.size(0);
  c.ic = c.weight.size(1);
  c.k = c.weight.size(2);
  c.stride = stride;
  return c;
}

// The network's convolution `name` (its weight and, where it has one, its bias).
Conv make_conv(const std::map<std::string, at::Tensor>& p, const std::string& name, const Layout& l,
               int64_t stride = 1, bool pad_in = true) {
  auto it = p.find(name + ".weight");
  if (it == p.end()) throw Error("oneDNN", "the network has no parameter " + name);
  Conv c = conv_of(it->second, l, stride, pad_in);
  auto b = p.find(name + ".bias");
  if (b != p.end()) {
    c.bias = at::zeros({c.oc}, at::kFloat);
    c.bias.narrow(0, 0, b->second.size(0)).copy_(b->second.detach().to(at::kFloat));
  }
  return c;
}

NormParams make_norm(const std::map<std::string, at::Tensor>& p, const std::string& name,
                     int64_t groups, double eps) {
  NormParams n;
  n.eps = eps;
  n.gamma = p.at(name + ".weight").detach().to(at::kFloat).contiguous().clone();
  n.beta = p.at(name + ".bias").detach().to(at::kFloat).contiguous().clone();
  n.groups = groups == 0 ? n.gamma.size(0) : groups;
  return n;
}

// A network's parameters by name (on the CPU), the eps of its norms (all the same) and the layout
// its pass runs in here; throws kdseg::Error naming why where it cannot run here.
struct NetParams {
  NetParams(const SegNetImpl& net, bool bf16) {
    const std::string why = onednn_unavailable(net, bf16);
    if (!why.empty()) throw Error("oneDNN " + net.arch(), why);
    layout = Layout{bf16 ? dt::bf16 : dt::f32, block_for(bf16)};
    for (const auto& item : net.named_parameters(true)) p[item.key()] = item.value().cpu();
    for (const auto& item : net.named_modules())
      if (auto norm = std::dynamic_pointer_cast<NormImpl>(item.value())) eps = norm->options.eps;
  }
  std::map<std::string, at::Tensor> p;
  double eps = NormOptions{}.eps;
  Layout layout;

  Conv conv(const std::string& name, int64_t stride = 1, bool pad_in = true) const {
    return make_conv(p, name, layout, stride, pad_in);
  }
  NormParams norm(const std::string& name, int64_t groups) const {
    return make_norm(p, name, groups, eps);
  }
  Block block(const std::string& prefix, int64_t groups) const {
    return {conv(prefix + ".conv1"), conv(prefix + ".conv2"), norm(prefix + ".norm1", groups),
            norm(prefix + ".norm2", groups)};
  }
  // The down, encoder, up and decoder parts of a student or resunet.
  void read_levels(ResidualLevels& m, const std::vector<int64_t>& encoder_blocks,
                   const std::vector<int64_t>& decoder_blocks, int64_t groups) const {
    for (size_t l = 0; l < encoder_blocks.size(); ++l) {
      if (l > 0) m.down.push_back(conv("down." + std::to_string(l - 1), 2));
      m.encoder.emplace_back();
      for (int64_t i = 0; i < encoder_blocks[l]; ++i)
        m.encoder.back().push_back(
            block("encoder." + std::to_string(l) + "." + std::to_string(i), groups));
    }
    for (size_t l = 0; l < decoder_blocks.size(); ++l) {
      m.up.push_back(conv("up." + std::to_string(l) + ".conv"));
      m.decoder.emplace_back();
      for (int64_t i = 0; i < decoder_blocks[l]; ++i)
        m.decoder.back().push_back(
            block("decoder." + std::to_string(l) + "." + std::to_string(i), groups));
    }
  }
};

}  // namespace

OneDnnNet::OneDnnNet() = default;
OneDnnNet::~OneDnnNet() = default;

bool OneDnnNet::bf16() const {
  return impl_->engine.pool.layout.bf16();
}
int64_t OneDnnNet::block() const {
  return impl_->engine.pool.layout.block;
}

at::Tensor OneDnnNet::forward(const at::Tensor& input) const {
  return impl_->run(input, {Flip{false, false, false}}, {0, 0, 0}, false);
}

at::Tensor OneDnnNet::predict_mirrored(const at::Tensor& input,
                                       const std::vector<std::vector<int64_t> >& flips,
                                       const std::array<int64_t, 3>& padded_to) const {
  if (flips.empty()) throw Error("oneDNN " + impl_->arch, "no flip given (the identity is {})");
  std::vector<Flip> mirror;
  for (const auto& dims : flips) {
    Flip f{false, false, false};
    for (int64_t d : dims) {
      if (d < 2 || d > 4)
        throw Error("oneDNN " + impl_->arch,
                    "flip dimension " + std::to_string(d) + " is not a spatial one (2, 3 or 4)");
      f[static_cast<size_t>(d - 2)] = true;
    }
    mirror.push_back(f);
  }
  return impl_->run(input, mirror, padded_to, true);
}

OneDnnStudent::OneDnnStudent(const StudentImpl& net, bool bf16) {
  const NetParams p(net, bf16);
  auto m = std::make_unique<StudentProgram>(p.layout);
  m->options = net.options;
  m->in_channels = net.options.in_channels;
  m->out_channels = net.options.out_channels;
  m->stride = net.stride();
  const int64_t groups = net.options.norm_groups;
  m->conv_in = p.conv("conv_in", 1, false);
  m->norm_in = p.norm("norm_in", groups);
  p.read_levels(*m, net.options.encoder_blocks, net.options.decoder_blocks, groups);
  for (size_t l = 0; l + 1 < net.options.widths.size(); ++l) {
    // The 1×1 merge over [skip, up] as two convolutions, one per half of its input channels.
    const at::Tensor merge = p.p.at("merge." + std::to_string(l) + ".weight");
    const int64_t w = net.options.widths[l];
    m->merge_skip.push_back(conv_of(merge.narrow(1, 0, w), p.layout));
    m->merge_up.push_back(conv_of(merge.narrow(1, w, w), p.layout));
  }
  m->head = p.conv("head");
  impl_ = std::move(m);
}

OneDnnUNet::OneDnnUNet(const UNetImpl& net, bool bf16) {
  const NetParams p(net, bf16);
  auto m = std::make_unique<UNetProgram>(p.layout);
  m->in_channels = net.options.in_channels;
  m->out_channels = net.options.out_channels;
  m->stride = net.stride();
  const auto& w = net.options.widths;
  auto stage = [&](const std::string& prefix, int64_t stride, int64_t split) {
    UNetProgram::Stage s;
    // The first convolution; in the decoder, the halves of its input channels apart ([skip, up]).
    const at::Tensor w1 = p.p.at(prefix + ".0.conv.weight");
    if (split > 0) {
      s.conv1 = conv_of(w1.narrow(1, 0, split), p.layout);
      s.conv1_up = conv_of(w1.narrow(1, split, w1.size(1) - split), p.layout);
    } else {
      s.conv1 = p.conv(prefix + ".0.conv", stride, prefix != "encoder.0");
    }
    s.conv2 = p.conv(prefix + ".1.conv");
    s.norm1 = p.norm(prefix + ".0.norm", 0);
    s.norm2 = p.norm(prefix + ".1.norm", 0);
    return s;
  };
  for (size_t l = 0; l < w.size(); ++l)
    m->encoder.push_back(stage("encoder." + std::to_string(l), l == 0 ? 1 : 2, 0));
  for (size_t l = 0; l + 1 < w.size(); ++l) {
    m->up.push_back(p.conv("up." + std::to_string(l) + ".conv"));
    m->decoder.push_back(stage("decoder." + std::to_string(l), 1, w[l]));
  }
  m->head = p.conv("head");
  impl_ = std::move(m);
}

OneDnnResUNet::OneDnnResUNet(const ResUNetImpl& net, bool bf16) {
  const NetParams p(net, bf16);
  auto m = std::make_unique<ResUNetProgram>(p.layout, net.arch());
  const ResUNetOptions& o = net.options;
  m->in_channels = o.in_channels;
  m->out_channels = o.out_channels;
  m->stride = net.stride();
  m->conv_in = p.conv("conv_in", 1, false);
  p.read_levels(*m, o.encoder_blocks, o.decoder_blocks, o.norm_groups);
  m->head_norm = p.norm("head_norm", o.norm_groups);
  m->head = p.conv("head");
  impl_ = std::move(m);
}

std::shared_ptr<OneDnnNet> make_onednn(const SegNetImpl& net, bool bf16) {
  if (!onednn_unavailable(net, bf16).empty()) return nullptr;
  if (const auto* s = dynamic_cast<const StudentImpl*>(&net))
    return std::make_shared<OneDnnStudent>(*s, bf16);
  if (const auto* r = dynamic_cast<const ResUNetImpl*>(&net))
    return std::make_shared<OneDnnResUNet>(*r, bf16);
  return std::make_shared<OneDnnUNet>(dynamic_cast<const UNetImpl&>(net), bf16);
}

#endif  // KDSEG_HAVE_ONEDNN

}  // namespace kdseg
