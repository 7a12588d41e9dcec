#pragma once
// Tiny configurations of the five architectures for CPU unit tests (same code as the paper
// sizes, a few thousand parameters each), and the input sizes each one accepts.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdseg::test {

inline nlohmann::json tiny_config(const std::string& arch) {
  if (arch == "student") return {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}};
  if (arch == "unet") return {{"widths", {4, 8, 16, 32}}};
  if (arch == "resunet") return {{"widths", {4, 8, 16, 32}}, {"norm_groups", 4}, {"dropout", 0.0}};
  if (arch == "resunet-vae")
    return {{"widths", {4, 8, 16, 32}},        {"norm_groups", 4}, {"dropout", 0.0},
            {"vae_input_shape", {16, 16, 16}}, {"vae_latent", 8},  {"vae_channels", 4}};
  if (arch == "cascade")
    return {{"base_features", 1},
            {"encoder_multiplier", 2},
            {"n_scales", 3},
            {"depth", 4},
            {"dropout", 0.0}};
  return {};
}

// Input sizes (D,H,W) that are multiples of each tiny network's stride; the first is also the
// one used for gradient checks (large enough that every norm sees more than one voxel).
inline std::vector<std::array<int64_t, 3>> valid_sizes(const std::string& arch) {
  if (arch == "cascade") return {{64, 64, 64}, {32, 32, 32}, {32, 64, 32}};
  if (arch == "resunet-vae") return {{16, 16, 16}};  // training mode: the VAE's fixed size
  return {{16, 16, 16}, {24, 16, 32}, {8, 8, 8}};
}

// GoogleTest names for tests parameterised by architecture: "resunet-vae" -> "resunet_vae".
inline std::string arch_test_name(const std::string& arch) {
  std::string n = arch;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

}  // namespace kdseg::test
