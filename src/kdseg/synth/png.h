#pragma once
// A minimal PNG writer (8-bit RGB, one IDAT chunk, deflate by libdeflate): enough to look at
// volumes without a viewer, with no new dependency.
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> px;  // row-major, 3 bytes per pixel
  RgbImage() = default;
  RgbImage(int w, int h, uint8_t fill = 0)
      : width(w), height(h), px(static_cast<size_t>(w) * static_cast<size_t>(h) * 3, fill) {}
  uint8_t* at(int x, int y) {
    return &px[(static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3];
  }
};

// The bytes of a PNG file holding `img`.
std::vector<uint8_t> encode_png(const RgbImage& img, int level = 6);
// Writes it atomically.
void write_png(const std::string& path, const RgbImage& img);

// Draws `text` (A-Z, 0-9, space, '.', '-', '_', '/') in a 5x7 pixel font scaled by `scale`.
void draw_text(RgbImage& img, int x, int y, const std::string& text, const uint8_t rgb[3],
               int scale = 1);

}  // namespace kdseg
