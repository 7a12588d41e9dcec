#pragma once
// Sliding-window inference (docs/design.md §4 "Inference"): one path for a single network, a
// teacher ensemble and the student (docs/design.md §7: it takes a callable).
//
// A (C,D,H,W) volume is covered by windows whose starts come from window_starts() on each axis;
// every window's prediction is weighted by gaussian_weights() (σ = 1/8 of the window, as nnU-Net
// and MONAI) and the weighted sum is divided by the summed weights, so overlapping windows blend
// without seams. A window larger than the volume is allowed (the volume is zero-padded at its far
// end and the result cropped back): "one window covering the whole crop".
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kdseg {

// Maps a batch of windows (N,C,d,h,w) to region probabilities (N,K,d,h,w) in [0,1].
using Predictor = std::function<at::Tensor(const at::Tensor& batch)>;

// Starts of windows of `window` voxels covering [0, size) with at least `overlap` (in [0,1)) of
// a window shared by neighbours: n = ceil((size - window) / (window (1 - overlap))) + 1 windows,
// spread evenly (rounded), the first at 0, the last at size - window. {0} when window >= size.
std::vector<int64_t> window_starts(int64_t size, int64_t window, double overlap);

// (d,h,w) float32 Gaussian importance map centred on the window, σ = sigma_scale · window per
// axis, scaled to a maximum of 1 and floored at 1e-3 (so border voxels still count).
at::Tensor gaussian_weights(const std::array<int64_t, 3>& window, double sigma_scale = 0.125);

// The smallest window covering `shape` whose sides are multiples of `stride` ("whole crop").
std::array<int64_t, 3> whole_window(const std::array<int64_t, 3>& shape, int64_t stride);

struct WindowOptions {
  std::array<int64_t, 3> window{128, 128, 128};  // voxels (D,H,W), multiples of the net's stride
  double overlap = 0.5;                          // share of a window its neighbours overlap
  int64_t batch = 1;                             // windows per predictor call, e.g. 2
  bool gaussian = true;                          // false: plain average of the windows
  double sigma_scale = 0.125;                    // σ of the Gaussian / window
};

// Runs `predict` over `image` (C,D,H,W) (any device) and returns (K,D,H,W) float32 on the
// image's device: the Gaussian-weighted average of the window predictions.
at::Tensor sliding_window(const at::Tensor& image, const Predictor& predict,
                          const WindowOptions& opt);

// Mirror test-time augmentation: "none", "xy" (the authors' 4 flips of X and Y: tensor dims D,
// H) or "all" (the 8 flips of X, Y, Z, as nnU-Net). Each flipped input is predicted, flipped
// back and the probabilities averaged. `fuse` puts all flips of a batch into one predictor call
// (faster on a CPU with memory to spare); otherwise one call per flip.
std::vector<std::vector<int64_t>> mirror_sets(const std::string& mode);  // dims of (N,C,D,H,W)
Predictor with_mirror_tta(Predictor predict, const std::string& mode, bool fuse = false);

}  // namespace kdseg
