#pragma once
// Regular grids of samples in millimetres and the smooth random fields the generator is built
// from (warps, bias fields, texture). Pure maths, no files.
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kdseg::synth {

using Vec3 = std::array<double, 3>;  // a point or displacement in mm

// Voxel (i, j, k) sits at origin + spacing * (i, j, k) (its centre), e.g. a 2 mm grid.
struct Grid {
  std::array<int64_t, 3> dim{0, 0, 0};  // voxels, e.g. 240,240,155
  double spacing = 1;                   // mm (isotropic), e.g. 1, 2 or 3
  Vec3 origin{0, 0, 0};                 // mm, centre of voxel (0,0,0)

  int64_t n_voxels() const { return dim[0] * dim[1] * dim[2]; }
  int64_t index(int64_t i, int64_t j, int64_t k) const { return (k * dim[1] + j) * dim[0] + i; }
  Vec3 position(int64_t i, int64_t j, int64_t k) const {
    return {origin[0] + spacing * i, origin[1] + spacing * j, origin[2] + spacing * k};
  }
  // The sub-grid of voxels [lo, hi) along each axis.
  Grid crop(const std::array<int64_t, 3>& lo, const std::array<int64_t, 3>& hi) const;
};

// A field of `n_ch` floats per voxel, interleaved (all channels of a voxel together, so that
// sampling several channels at one point touches one cache line).
struct Field {
  Grid grid;
  int n_ch = 1;
  std::vector<float> v;  // (voxel * n_ch + channel)

  Field() = default;
  Field(const Grid& g, int channels, float fill = 0.f)
      : grid(g), n_ch(channels), v(static_cast<size_t>(g.n_voxels() * channels), fill) {}
  float& at(int64_t voxel, int c = 0) { return v[static_cast<size_t>(voxel * n_ch + c)]; }
  float at(int64_t voxel, int c = 0) const { return v[static_cast<size_t>(voxel * n_ch + c)]; }
  // Trilinear interpolation of every channel at `p` (mm) into out[0..n_ch); points outside the
  // grid take the nearest edge value when `clamp`, else `outside`.
  void sample(const Vec3& p, float* out, bool clamp = false, float outside = 0.f) const;
  float sample1(const Vec3& p, int c = 0, bool clamp = false, float outside = 0.f) const;
};

// Averages blocks of `factor`^3 voxels (a box filter: the right anti-aliasing for fractions).
// The result's voxel centres are the centres of the blocks. Partial blocks at the far edges are
// averaged over the voxels they have.
Field downsample_box(const Field& f, int factor);

// Distance (mm) from each voxel to the nearest voxel where `inside[v]` is false, for voxels that
// are inside (0 outside); 3-4-5 chamfer approximation of the Euclidean distance, two passes.
std::vector<float> chamfer_distance(const std::array<int64_t, 3>& dim, double spacing,
                                    const std::vector<uint8_t>& inside);

// Smooth step from 0 (x <= 0) to 1 (x >= 1).
inline float smoothstep01(float x) {
  x = x < 0.f ? 0.f : (x > 1.f ? 1.f : x);
  return x * x * (3.f - 2.f * x);
}

// A cubic B-spline field of `n_comp` components on a lattice of control points `ctrl_mm` apart
// covering a box of space: evaluates to the same value at a point whatever grid it is evaluated
// on (so a case's warp is one function, sampled on the 2 mm growth grid and on the 1 mm output
// grid alike).
class BSplineField {
 public:
  BSplineField() = default;
  // Control points cover [lo, hi] (mm) with a margin; coefficients all zero.
  BSplineField(const Vec3& lo, const Vec3& hi, double ctrl_mm, int n_comp);
  // Random coefficients N(0, sd), clipped to +-clip (clip <= 0: none); sd is chosen so that the
  // field itself has standard deviation `field_sd` (a cubic B-spline averages coefficients:
  // E[sum w^2] = (151/315)^3 per point).
  template <class R>
  void randomize(R& rng, double field_sd, double clip = 0);
  int n_comp() const { return n_comp_; }
  // Value at one point (64 control points per component).
  void eval(const Vec3& p, float* out) const;
  // Values at every voxel of `g` (separable: ~12 multiply-adds per voxel and component).
  Field eval_on_grid(const Grid& g) const;

  std::vector<float>& coeffs() { return c_; }
  friend class BSplineSlicer;
  const std::array<int64_t, 3>& ctrl_dim() const { return n_; }

 private:
  Vec3 lo_{0, 0, 0};
  double h_ = 1;
  std::array<int64_t, 3> n_{0, 0, 0};
  int n_comp_ = 0;
  std::vector<float> c_;  // ((cz * ny + cy) * nx + cx) * n_comp + comp
};

// Evaluates a BSplineField on a grid one z-slice at a time (memory: the field's control planes
// times one slice, instead of the whole grid).
class BSplineSlicer {
 public:
  BSplineSlicer(const BSplineField& f, const Grid& g);
  // Values of slice z: dim[0] * dim[1] voxels x n_comp, x fastest, components interleaved.
  void slice(int64_t z, float* out) const;
  int64_t slice_size() const { return nx_ * ny_ * nc_; }

 private:
  int64_t nx_ = 0, ny_ = 0;
  int nc_ = 0;
  std::vector<int64_t> first_z_;  // first control plane of each z (relative to the stored ones)
  std::vector<float> w_z_;        // 4 weights per z
  std::vector<float> planes_;     // control planes contracted over x and y: [cz][y][x][comp]
};

// Uniform cubic B-spline basis weights at fractional position t in [0, 1).
void bspline_weights(double t, double w[4]);

template <class R>
void BSplineField::randomize(R& rng, double field_sd, double clip) {
  const double sd = field_sd / 0.3318;  // sqrt((151/315)^3)
  for (auto& x : c_) {
    double v = rng.normal() * sd;
    if (clip > 0) v = v > clip ? clip : (v < -clip ? -clip : v);
    x = static_cast<float>(v);
  }
}

}  // namespace kdseg::synth
