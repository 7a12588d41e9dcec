// Regions <-> labels and the post-processing steps (infer/postprocess.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kdseg/data/preprocess.h"
#include "kdseg/infer/postprocess.h"
#include "kdseg/io/dataset.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

TEST(Postprocess, RegionsAndLabelsRoundTripInEveryConvention) {
  const LabelMap phantom = test::phantom_labels({24, 20, 16}, {12, 10, 8}, 7);
  at::Tensor labels = labels_to_tensor(phantom);
  ASSERT_GT((labels == 4).sum().item<int64_t>(), 0);
  ASSERT_GT((labels == 1).sum().item<int64_t>(), 0);
  ASSERT_GT((labels == 2).sum().item<int64_t>(), 0);
  at::Tensor back = regions_to_labels(labels_to_regions(labels), 0.5);
  EXPECT_TRUE(at::equal(back, labels));
  for (Layout c : {Layout::brats2021, Layout::brats2023, Layout::msd}) {
    const auto to = label_lut_from_internal(c), from = label_lut_to_internal(c);
    LabelMap file = phantom;
    labels_to_convention(file, c);
    for (size_t i = 0; i < file.data.size(); ++i) {
      ASSERT_EQ(from[file.data[i]], phantom.data[i]) << layout_name(c);
      ASSERT_EQ(file.data[i], to[phantom.data[i]]);
    }
  }
}

TEST(Postprocess, ThresholdDecidesEachRegion) {
  at::Tensor p = at::zeros({3, 1, 1, 4});
  p[0] = at::tensor({0.2f, 0.6f, 0.9f, 0.9f}).view({1, 1, 4});
  p[1] = at::tensor({0.0f, 0.1f, 0.7f, 0.9f}).view({1, 1, 4});
  p[2] = at::tensor({0.0f, 0.0f, 0.1f, 0.8f}).view({1, 1, 4});
  EXPECT_TRUE(at::equal(regions_to_labels(p, 0.5).flatten(), at::tensor({0, 2, 1, 4}, at::kByte)));
  EXPECT_TRUE(at::equal(regions_to_labels(p, 0.85).flatten(), at::tensor({0, 0, 2, 1}, at::kByte)));
}

TEST(Postprocess, ComponentsAreTwentySixConnected) {
  std::vector<uint8_t> m(5 * 5 * 5, 0);
  auto at3 = [&](int x, int y, int z) -> uint8_t& { return m[(z * 5 + y) * 5 + x]; };
  at3(0, 0, 0) = at3(1, 1, 1) = 1;  // diagonal neighbours: one component
  at3(4, 4, 4) = 1;                 // alone
  std::vector<int64_t> sizes;
  const auto comp = connected_components(m.data(), {5, 5, 5}, &sizes);
  ASSERT_EQ(sizes.size(), 3u);  // background slot + 2
  EXPECT_EQ(sizes[1], 2);
  EXPECT_EQ(sizes[2], 1);
  EXPECT_EQ(comp[0], comp[(1 * 5 + 1) * 5 + 1]);
}

// The plain flood fill from every unvisited voxel in memory order: what the two-pass labelling
// must reproduce exactly (component numbers and sizes).
std::vector<int32_t> flood_fill_components(const std::vector<uint8_t>& mask,
                                           const std::array<int64_t, 3>& d,
                                           std::vector<int64_t>* sizes) {
  const int64_t n = d[0] * d[1] * d[2];
  std::vector<int32_t> comp(static_cast<size_t>(n), 0);
  sizes->assign(1, 0);
  int32_t next = 0;
  for (int64_t seed = 0; seed < n; ++seed) {
    if (!mask[seed] || comp[seed]) continue;
    comp[seed] = ++next;
    int64_t count = 0;
    std::vector<int64_t> stack{seed};
    while (!stack.empty()) {
      const int64_t v = stack.back();
      stack.pop_back();
      ++count;
      const int64_t x = v % d[0], y = (v / d[0]) % d[1], z = v / (d[0] * d[1]);
      for (int64_t dz = -1; dz <= 1; ++dz)
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) {
            const int64_t X = x + dx, Y = y + dy, Z = z + dz;
            if (X < 0 || Y < 0 || Z < 0 || X >= d[0] || Y >= d[1] || Z >= d[2]) continue;
            const int64_t u = (Z * d[1] + Y) * d[0] + X;
            if (mask[u] && !comp[u]) {
              comp[u] = next;
              stack.push_back(u);
            }
          }
    }
    sizes->push_back(count);
  }
  return comp;
}

TEST(Postprocess, ComponentsEqualAFloodFillOnRandomMasks) {
  std::mt19937 rng(5);
  int64_t worst_components = 0;
  for (const std::array<int64_t, 3> d : std::vector<std::array<int64_t, 3>>{
           {17, 13, 11}, {1, 9, 7}, {9, 1, 1}, {6, 5, 1}, {24, 20, 16}})
    for (double density : {0.05, 0.2, 0.35, 0.6}) {
      std::bernoulli_distribution on(density);
      std::vector<uint8_t> m(static_cast<size_t>(d[0] * d[1] * d[2]));
      for (auto& v : m) v = on(rng);
      std::vector<int64_t> a_sizes, b_sizes;
      const auto a = connected_components(m.data(), d, &a_sizes);
      const auto b = flood_fill_components(m, d, &b_sizes);
      EXPECT_EQ(a, b) << d[0] << "x" << d[1] << "x" << d[2] << " density " << density;
      EXPECT_EQ(a_sizes, b_sizes);
      worst_components = std::max<int64_t>(worst_components, static_cast<int64_t>(b_sizes.size()));
    }
  EXPECT_GT(worst_components, 20) << "the masks must hold many components to mean something";
}

TEST(Postprocess, SmallComponentsAndSmallEnhancingTumourAreHandledInMm3) {
  // A big tumour (27 voxels) and a speck (1 voxel) at 2 mm: 8 mm³ per voxel.
  std::vector<uint8_t> l(10 * 10 * 10, 0);
  auto at3 = [&](int x, int y, int z) -> uint8_t& { return l[(z * 10 + y) * 10 + x]; };
  for (int z = 1; z < 4; ++z)
    for (int y = 1; y < 4; ++y)
      for (int x = 1; x < 4; ++x) at3(x, y, z) = 2;
  at3(2, 2, 2) = 4;  // ET: 1 voxel = 8 mm³
  at3(8, 8, 8) = 2;
  std::vector<uint8_t> a = l;
  PostprocessOptions o;
  o.min_component_fraction = 0.1;
  EXPECT_EQ(postprocess_labels(a.data(), {10, 10, 10}, {2, 2, 2}, o), 1);
  EXPECT_EQ(a[(8 * 10 + 8) * 10 + 8], 0);
  EXPECT_EQ(a[(2 * 10 + 2) * 10 + 2], 4);
  PostprocessOptions e;
  e.et_min_mm3 = 10;  // 8 mm³ of ET < 10: becomes necrosis
  std::vector<uint8_t> b = l;
  postprocess_labels(b.data(), {10, 10, 10}, {2, 2, 2}, e);
  EXPECT_EQ(b[(2 * 10 + 2) * 10 + 2], 1);
  std::vector<uint8_t> c = l;  // at 1 mm the same ET is 1 mm³: the threshold in mm³ still holds
  e.et_min_mm3 = 0.5;
  postprocess_labels(c.data(), {10, 10, 10}, {1, 1, 1}, e);
  EXPECT_EQ(c[(2 * 10 + 2) * 10 + 2], 4);
  PostprocessOptions s;
  s.min_component_mm3 = 16;  // the 8 mm³ speck goes, the 216 mm³ tumour stays
  std::vector<uint8_t> d = l;
  postprocess_labels(d.data(), {10, 10, 10}, {2, 2, 2}, s);
  EXPECT_EQ(d[(8 * 10 + 8) * 10 + 8], 0);
  EXPECT_EQ(d[(1 * 10 + 1) * 10 + 1], 2);
}

}  // namespace
}  // namespace kdseg
