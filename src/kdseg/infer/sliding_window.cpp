#include "kdseg/infer/sliding_window.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "kdseg/util/error.h"

namespace kdseg {

std::vector<int64_t> window_starts(int64_t size, int64_t window, double overlap) {
  if (size <= 0 || window <= 0) throw Error("sliding window", "sizes must be positive");
  if (!(overlap >= 0 && overlap < 1))
    throw Error("sliding window", "overlap must be in [0, 1), got " + std::to_string(overlap));
  if (window >= size) return {0};
  const double step = static_cast<double>(window) * (1.0 - overlap);
  const int64_t n =
      static_cast<int64_t>(std::ceil(static_cast<double>(size - window) / step - 1e-9)) + 1;
  std::vector<int64_t> starts;
  const double actual = static_cast<double>(size - window) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) starts.push_back(std::llround(actual * static_cast<double>(i)));
  return starts;
}

at::Tensor gaussian_weights(const std::array<int64_t, 3>& window, double sigma_scale) {
  at::Tensor w = at::ones({1}, at::kDouble);
  std::vector<at::Tensor> axes;
  for (int a = 0; a < 3; ++a) {
    const double c = (static_cast<double>(window[a]) - 1.0) / 2.0;
    const double sigma = std::max(sigma_scale * static_cast<double>(window[a]), 1e-6);
    at::Tensor x = at::arange(window[a], at::kDouble);
    axes.push_back(at::exp(-0.5 * ((x - c) / sigma).pow(2)));
  }
  w = axes[0].view({-1, 1, 1}) * axes[1].view({1, -1, 1}) * axes[2].view({1, 1, -1});
  w = w / w.max();
  return w.clamp_min(1e-3).to(at::kFloat).contiguous();
}

std::array<int64_t, 3> whole_window(const std::array<int64_t, 3>& shape, int64_t stride) {
  std::array<int64_t, 3> w{};
  const int64_t s = std::max<int64_t>(stride, 1);
  for (int a = 0; a < 3; ++a) w[a] = std::max<int64_t>((shape[a] + s - 1) / s * s, s);
  return w;
}

at::Tensor sliding_window(const at::Tensor& image, const Predictor& predict,
                          const WindowOptions& opt) {
  if (image.dim() != 4) throw Error("sliding window", "the image must be (C,D,H,W)");
  const std::array<int64_t, 3> shape{image.size(1), image.size(2), image.size(3)};
  const auto& win = opt.window;
  // Pad the far end where the window is larger than the volume.
  std::array<int64_t, 3> padded{};
  for (int a = 0; a < 3; ++a) padded[a] = std::max(shape[a], win[a]);
  at::Tensor x = image;
  if (padded != shape) {
    x = at::zeros({image.size(0), padded[0], padded[1], padded[2]}, image.options());
    x.slice(1, 0, shape[0]).slice(2, 0, shape[1]).slice(3, 0, shape[2]).copy_(image);
  }
  std::array<std::vector<int64_t>, 3> starts;
  for (int a = 0; a < 3; ++a) starts[a] = window_starts(padded[a], win[a], opt.overlap);
  std::vector<std::array<int64_t, 3>> corners;
  for (int64_t i : starts[0])
    for (int64_t j : starts[1])
      for (int64_t k : starts[2]) corners.push_back({i, j, k});

  const bool single = corners.size() == 1;
  at::Tensor weight = (opt.gaussian && !single)
                          ? gaussian_weights(win, opt.sigma_scale).to(image.device())
                          : at::ones({win[0], win[1], win[2]}, image.options().dtype(at::kFloat));
  at::Tensor sum, norm;
  const int64_t batch = std::max<int64_t>(opt.batch, 1);
  for (size_t first = 0; first < corners.size(); first += static_cast<size_t>(batch)) {
    const size_t last = std::min(corners.size(), first + static_cast<size_t>(batch));
    std::vector<at::Tensor> windows;
    for (size_t n = first; n < last; ++n) {
      const auto& c = corners[n];
      windows.push_back(x.slice(1, c[0], c[0] + win[0])
                            .slice(2, c[1], c[1] + win[1])
                            .slice(3, c[2], c[2] + win[2]));
    }
    // One window over the whole (padded) volume: the volume itself, no stacked copy.
    at::Tensor out = predict(single ? x.unsqueeze(0) : at::stack(windows)).to(at::kFloat);
    if (single) {
      at::Tensor p = out[0];
      return p.slice(1, 0, shape[0]).slice(2, 0, shape[1]).slice(3, 0, shape[2]).contiguous();
    }
    if (!sum.defined()) {
      sum = at::zeros({out.size(1), padded[0], padded[1], padded[2]}, out.options());
      norm = at::zeros({padded[0], padded[1], padded[2]}, out.options());
    }
    for (size_t n = first; n < last; ++n) {
      const auto& c = corners[n];
      sum.slice(1, c[0], c[0] + win[0])
          .slice(2, c[1], c[1] + win[1])
          .slice(3, c[2], c[2] + win[2])
          .add_(out[static_cast<int64_t>(n - first)] * weight);
      norm.slice(0, c[0], c[0] + win[0])
          .slice(1, c[1], c[1] + win[1])
          .slice(2, c[2], c[2] + win[2])
          .add_(weight);
    }
  }
  sum.div_(norm);
  return sum.slice(1, 0, shape[0]).slice(2, 0, shape[1]).slice(3, 0, shape[2]).contiguous();
}

std::vector<std::vector<int64_t>> mirror_sets(const std::string& mode) {
  if (mode == "none") return {{}};
  if (mode == "xy") return {{}, {2}, {3}, {2, 3}};
  if (mode == "all") return {{}, {2}, {3}, {4}, {2, 3}, {2, 4}, {3, 4}, {2, 3, 4}};
  throw Error("--tta", "unknown mode \"" + mode + "\"", "use none, xy (4 flips) or all (8 flips)");
}

Predictor with_mirror_tta(Predictor predict, const std::string& mode, bool fuse) {
  auto sets = mirror_sets(mode);
  if (sets.size() == 1) return predict;
  return [predict = std::move(predict), sets, fuse](const at::Tensor& batch) {
    const double n = static_cast<double>(sets.size());
    if (fuse) {
      std::vector<at::Tensor> inputs;
      for (const auto& dims : sets) inputs.push_back(dims.empty() ? batch : batch.flip(dims));
      at::Tensor out = predict(at::cat(inputs));
      const int64_t b = batch.size(0);
      at::Tensor acc;
      for (size_t s = 0; s < sets.size(); ++s) {
        at::Tensor o = out.slice(0, static_cast<int64_t>(s) * b, static_cast<int64_t>(s + 1) * b);
        if (!sets[s].empty()) o = o.flip(sets[s]);
        acc = acc.defined() ? acc.add_(o) : o.clone();
      }
      return acc.div_(n);
    }
    at::Tensor acc;
    for (const auto& dims : sets) {
      at::Tensor o = dims.empty() ? predict(batch) : predict(batch.flip(dims)).flip(dims);
      acc = acc.defined() ? acc.add_(o) : o.to(at::kFloat).clone();
    }
    return acc.div_(n);
  };
}

}  // namespace kdseg
