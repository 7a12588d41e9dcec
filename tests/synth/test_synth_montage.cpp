// The PNG writer and the montage.
#include <gtest/gtest.h>

#include <zlib.h>

#include <filesystem>

#include "kdseg/io/gzip.h"
#include "kdseg/synth/montage.h"
#include "kdseg/synth/png.h"
#include "support/test_support.h"

using namespace kdseg;

namespace {
uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
}  // namespace

TEST(SynthPng, EncodesDecodableRgb) {
  RgbImage img(3, 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) {
      uint8_t* p = img.at(x, y);
      p[0] = static_cast<uint8_t>(10 * x);
      p[1] = static_cast<uint8_t>(100 + y);
      p[2] = 7;
    }
  const std::vector<uint8_t> png = encode_png(img);
  ASSERT_GT(png.size(), 8u + 25 + 12 + 12);
  EXPECT_EQ(std::vector<uint8_t>(png.begin(), png.begin() + 8),
            (std::vector<uint8_t>{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}));
  EXPECT_EQ(be32(&png[8]), 13u);
  EXPECT_EQ(std::string(png.begin() + 12, png.begin() + 16), "IHDR");
  EXPECT_EQ(be32(&png[16]), 3u);
  EXPECT_EQ(be32(&png[20]), 2u);
  // IHDR CRC, then IDAT: inflate it and compare with the filtered scanlines.
  EXPECT_EQ(be32(&png[29]), crc32(0, &png[12], 17));
  const uint32_t n = be32(&png[33]);
  EXPECT_EQ(std::string(png.begin() + 37, png.begin() + 41), "IDAT");
  std::vector<uint8_t> raw(2 * (1 + 9));
  uLongf len = raw.size();
  ASSERT_EQ(uncompress(raw.data(), &len, &png[41], n), Z_OK);
  EXPECT_EQ(len, raw.size());
  EXPECT_EQ(raw[0], 0);
  EXPECT_EQ(raw[1 + 3], 10);    // pixel (1,0) red
  EXPECT_EQ(raw[10 + 2], 101);  // pixel (0,1) green
  EXPECT_EQ(std::string(png.end() - 8, png.end() - 4), "IEND");
}

TEST(SynthPng, MontageOfAPhantomShowsTheLabels) {
  Volume v;
  v.dim = {20, 24, 16};
  v.spacing = {2, 2, 2};
  v.n_channels = 4;
  v.data.assign(static_cast<size_t>(v.n_voxels() * 4), 0.f);
  LabelMap l;
  l.dim = v.dim;
  l.spacing = v.spacing;
  l.data.assign(static_cast<size_t>(v.n_voxels()), 0);
  for (int64_t z = 2; z < 14; ++z)
    for (int64_t y = 2; y < 22; ++y)
      for (int64_t x = 2; x < 18; ++x) {
        for (int c = 0; c < 4; ++c) v.at(x, y, z, c) = 100.f + c + x;
        if (std::abs(x - 10) < 3 && std::abs(y - 12) < 3 && std::abs(z - 8) < 3) l.at(x, y, z) = 4;
      }
  const RgbImage img = render_montage(v, {"T1", "T1CE", "T2", "FLAIR"}, &l, 60);
  EXPECT_EQ(img.width, 5 * 50 + 6 * 4);  // 40 mm wide, 48 mm tall -> 50 px wide
  // Somewhere in the label column the ET colour (yellow-ish: red and green high, blue low).
  int yellow = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 4 * (50 + 4); x < img.width; ++x) {
      const uint8_t* p = &img.px[(static_cast<size_t>(y) * img.width + x) * 3];
      yellow += p[0] > 150 && p[1] > 150 && p[2] < 120;
    }
  EXPECT_GT(yellow, 20);
  test::ScratchDir dir("synth_png");
  write_png(dir.str("m.png"), img);
  EXPECT_TRUE(std::filesystem::exists(dir.str("m.png")));
}
