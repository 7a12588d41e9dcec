#pragma once
// The architectures kdseg knows, as plain data: what `kdseg models` prints and what any
// LibTorch-free code (the CLI) may ask about. Builds nothing itself in the header: no LibTorch
// types here (make_net in models/net.h builds a network).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kdseg {

struct ArchInfo {
  std::string name;          // "student"
  std::string description;   // one line, e.g. "residual UNet as released by the authors (...)"
  nlohmann::json config;     // the paper-size options, e.g. {"widths":[16,32,64,128],…}
  std::string patch;         // the paper's training patch, e.g. "128x128x128"
  int64_t n_parameters = 0;  // of the paper-size configuration, e.g. 4509939
  int64_t stride = 1;        // input sizes must be multiples of it, e.g. 8
};

// The paper-size options of an architecture (what make_net builds by default). Throws
// kdseg::Error for an unknown name.
nlohmann::json paper_config(const std::string& arch);

// Every architecture in `kdseg models` order, with its paper-size parameter count (each network
// is built once on the CPU to count; no forward pass).
std::vector<ArchInfo> list_architectures();

// 4509939 → "4.51 M", 812345 → "0.81 M".
std::string format_millions(int64_t n);

// One line per architecture: name, parameter count, stride, paper patch, configuration.
std::string format_architectures(const std::vector<ArchInfo>& archs);

}  // namespace kdseg
