// Sliding window, Gaussian weights and mirror TTA (infer/sliding_window.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kdseg/infer/sliding_window.h"

namespace kdseg {
namespace {

TEST(SlidingWindow, StartsCoverTheAxisExactlyWithTheAskedOverlap) {
  for (int64_t size : {16, 17, 31, 64, 100, 155})
    for (int64_t window : {8, 16, 32, 128})
      for (double overlap : {0.0, 0.25, 0.5, 0.75}) {
        const auto s = window_starts(size, window, overlap);
        ASSERT_FALSE(s.empty());
        EXPECT_EQ(s.front(), 0);
        if (window >= size) {
          EXPECT_EQ(s.size(), 1u);
          continue;
        }
        EXPECT_EQ(s.back(), size - window) << size << " " << window;
        std::vector<int> covered(static_cast<size_t>(size), 0);
        for (size_t i = 0; i < s.size(); ++i) {
          for (int64_t v = s[i]; v < s[i] + window; ++v) covered[static_cast<size_t>(v)]++;
          if (i > 0) {  // neighbours overlap by at least `overlap` of a window (rounding: 1 voxel)
            EXPECT_GT(s[i], s[i - 1]);
            EXPECT_LE(s[i] - s[i - 1], window * (1 - overlap) + 1);
          }
        }
        for (int c : covered) EXPECT_GE(c, 1);
      }
  EXPECT_EQ(window_starts(100, 40, 0.5), (std::vector<int64_t>{0, 20, 40, 60}));
  EXPECT_THROW(window_starts(10, 4, 1.0), std::exception);
}

TEST(SlidingWindow, GaussianWeightsPeakAtTheCentreAndAreSymmetric) {
  at::Tensor w = gaussian_weights({16, 12, 9});
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{16, 12, 9}));
  EXPECT_FLOAT_EQ(w.max().item<float>(), 1.0f);
  EXPECT_GE(w.min().item<float>(), 1e-3f);
  EXPECT_TRUE(at::allclose(w, w.flip({0})));
  EXPECT_TRUE(at::allclose(w, w.flip({1, 2})));
  EXPECT_FLOAT_EQ(gaussian_weights({9, 9, 9})[4][4][4].item<float>(), 1.0f);  // the centre voxel
  // σ = 1/8 of the window: σ = 33/8 voxels from the centre the weight is exp(-1/2)
  at::Tensor line = gaussian_weights({1, 1, 33})[0][0];
  const double sigma = 33.0 / 8.0;
  EXPECT_NEAR(line[16 + 4].item<float>(), std::exp(-0.5 * (4 / sigma) * (4 / sigma)), 1e-5);
}

// A per-voxel predictor: the sliding window must reproduce it exactly, whatever the windows.
at::Tensor voxelwise(const at::Tensor& x) {
  return at::sigmoid(x.slice(1, 0, 3) * 0.7 - 0.2);
}

TEST(SlidingWindow, APerVoxelPredictorIsReproducedWithAnyWindowAndOverlap) {
  at::manual_seed(3);
  at::Tensor img = at::randn({4, 21, 18, 13});
  at::Tensor direct = voxelwise(img.unsqueeze(0))[0];
  for (auto win : {std::array<int64_t, 3>{8, 8, 8}, {16, 8, 4}, {32, 32, 32}, {21, 18, 13}})
    for (double overlap : {0.0, 0.5})
      for (int64_t batch : {1, 3}) {
        WindowOptions o;
        o.window = win;
        o.overlap = overlap;
        o.batch = batch;
        at::Tensor out = sliding_window(img, voxelwise, o);
        ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 21, 18, 13}));
        EXPECT_TRUE(at::allclose(out, direct, 1e-5, 1e-6)) << win[0] << " " << overlap;
      }
}

TEST(SlidingWindow, WindowsBlendWithGaussianWeights) {
  // A predictor that returns each window's own index as a constant: a voxel seen by two windows
  // gets the Gaussian-weighted mix, never a plain last-writer value.
  int calls = 0;
  Predictor count = [&calls](const at::Tensor& x) {
    ++calls;
    return at::full({x.size(0), 1, x.size(2), x.size(3), x.size(4)}, static_cast<float>(calls));
  };
  WindowOptions o;
  o.window = {1, 1, 8};
  o.overlap = 0.5;
  at::Tensor out = sliding_window(at::zeros({1, 1, 1, 12}), count, o);  // starts 0, 4
  EXPECT_EQ(calls, 2);
  EXPECT_FLOAT_EQ(out[0][0][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(out[0][0][0][11].item<float>(), 2.0f);
  const float mid =
      out[0][0][0][6].item<float>();  // closer to window 2's centre (7.5) than 1's (3.5)
  EXPECT_GT(mid, 1.5f);
  EXPECT_LT(mid, 2.0f);
}

TEST(SlidingWindow, MirrorTtaOfASymmetricModelEqualsNoTta) {
  at::manual_seed(4);
  at::Tensor img = at::randn({1, 4, 8, 10, 6});
  for (const char* mode : {"xy", "all"})
    for (bool fuse : {false, true}) {
      at::Tensor out = with_mirror_tta(voxelwise, mode, fuse)(img);
      EXPECT_TRUE(at::allclose(out, voxelwise(img), 1e-6, 1e-6)) << mode << fuse;
    }
  // A model that is not mirror-symmetric (output = position along D) is averaged by the X flips
  Predictor ramp = [](const at::Tensor& x) {
    return at::arange(x.size(2), x.options())
        .view({1, 1, -1, 1, 1})
        .expand({x.size(0), 3, x.size(2), x.size(3), x.size(4)})
        .contiguous();
  };
  at::Tensor avg = with_mirror_tta(ramp, "xy", false)(img);
  EXPECT_TRUE(at::allclose(avg, at::full_like(avg, 3.5)));  // (i + 7 - i) / 2 everywhere
  EXPECT_TRUE(at::allclose(with_mirror_tta(ramp, "xy", true)(img), avg));
  EXPECT_EQ(mirror_sets("xy").size(), 4u);
  EXPECT_EQ(mirror_sets("all").size(), 8u);
  for (const auto& s : mirror_sets("xy"))
    for (int64_t d : s) EXPECT_NE(d, 4);  // never Z
  EXPECT_THROW(mirror_sets("diagonal"), std::exception);
}

TEST(SlidingWindow, WholeWindowRoundsUpToTheStride) {
  EXPECT_EQ(whole_window({45, 54, 44}, 8), (std::array<int64_t, 3>{48, 56, 48}));
  EXPECT_EQ(whole_window({16, 16, 16}, 16), (std::array<int64_t, 3>{16, 16, 16}));
}

}  // namespace
}  // namespace kdseg
