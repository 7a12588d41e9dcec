// Paper-size parameter count and forward time of every architecture, with ratios to the student
// (the baseline, measured in the same process).
//
//   bench_models [size] [threads] [repeats] [malloc]   defaults: 128 2 3 reuse
//                                                      e.g. bench_models 64 2 1 system
//
// malloc: "reuse" (default) keeps freed memory in the process (kdseg::keep_freed_memory), "system"
// leaves the allocator's defaults; glibc's make every tensor over 32 MB a fresh mmap whose pages
// fault in on first touch (jemalloc's purge freed pages after 10 s). Measured on the development
// VM: first-touch faults run at ~0.2 GB/s, so a 128 MB activation costs ~0.6 s before any
// arithmetic, and an elementwise op at 16×128³ takes 0.53 s with "system" against 0.02 s with
// "reuse".
//
// Forward = one (1,4,size³) input, eval mode, c10::InferenceMode, fp32, CPU; one warm-up pass,
// then `repeats` rounds timing every network once in turn (best and median). resunet-vae in
// eval mode is resunet (the VAE branch is a training-time regulariser); an extra line times its
// training-mode forward, VAE included, built for size³ inputs.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kdseg/models/net.h"
#include "kdseg/models/registry.h"
#include "kdseg/util/memory.h"

namespace {

struct Row {
  std::string name;
  kdseg::SegNet net;
  int64_t n_parameters = 0;
  std::vector<double> wall;  // seconds per timed forward
};

double seconds_of_forward(kdseg::SegNet& net, const at::Tensor& x) {
  c10::InferenceMode guard;
  const auto t0 = std::chrono::steady_clock::now();
  net->forward(x);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t size = argc > 1 ? std::atoll(argv[1]) : 128;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const int repeats = std::max(1, argc > 3 ? std::atoi(argv[3]) : 3);
  const std::string malloc_mode = argc > 4 ? argv[4] : "reuse";
  if (malloc_mode == "reuse") {
    kdseg::keep_freed_memory();  // freed pages stay mapped for the next pass
  } else if (malloc_mode != "system") {
    std::fprintf(stderr, "bench_models: malloc must be reuse or system, got %s\n",
                 malloc_mode.c_str());
    return 2;
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  std::printf(
      "bench_models: forward of (1,4,%lld,%lld,%lld), %d thread(s), fp32 CPU, eval + "
      "InferenceMode, 1 warm-up + %d rounds, malloc %s; LibTorch %s\n",
      static_cast<long long>(size), static_cast<long long>(size), static_cast<long long>(size),
      threads, repeats, malloc_mode.c_str(), TORCH_VERSION);
  const at::Tensor x = torch::randn({1, 4, size, size, size});

  // The student first: it is the baseline of every ratio.
  std::vector<Row> rows;
  for (const std::string name : {"student", "unet", "resunet", "resunet-vae", "cascade"}) {
    kdseg::SegNet net = kdseg::make_net(name, kdseg::paper_config(name));
    net->eval();
    if (size % net->stride() != 0) {
      std::printf("%-12s skipped: %lld is not a multiple of its stride %lld\n", name.c_str(),
                  static_cast<long long>(size), static_cast<long long>(net->stride()));
      continue;
    }
    rows.push_back({name, net, kdseg::count_parameters(*net), {}});
  }
  {  // resunet-vae's training-mode forward, VAE branch included, built for this input size
    nlohmann::json cfg = kdseg::paper_config("resunet-vae");
    cfg["vae_input_shape"] = {size, size, size};
    cfg["dropout"] = 0.0;
    kdseg::SegNet net = kdseg::make_net("resunet-vae", cfg);
    net->train();
    rows.push_back({"resunet-vae (train fwd, VAE at " + std::to_string(size) + "^3)",
                    net,
                    kdseg::count_parameters(*net),
                    {}});
  }
  // One warm-up each (oneDNN primitives, first touch of the heap), then `repeats` rounds that
  // time every network once in turn, so that load from other processes spreads over all rows.
  for (auto& r : rows) seconds_of_forward(r.net, x);
  for (int round = 0; round < repeats; ++round)
    for (auto& r : rows) r.wall.push_back(seconds_of_forward(r.net, x));

  auto best = [](const Row& r) { return *std::min_element(r.wall.begin(), r.wall.end()); };
  auto median = [](Row r) {
    std::sort(r.wall.begin(), r.wall.end());
    return r.wall[r.wall.size() / 2];
  };
  const Row& base = rows.front();
  std::printf("\n%-38s %9s %8s %8s %8s %9s\n", "architecture", "params", "ratio", "best s", "ratio",
              "median s");
  for (const auto& r : rows)
    std::printf("%-38s %9s %7.2fx %8.2f %7.2fx %9.2f\n", r.name.c_str(),
                kdseg::format_millions(r.n_parameters).c_str(),
                static_cast<double>(r.n_parameters) / static_cast<double>(base.n_parameters),
                best(r), best(r) / best(base), median(r));
  std::printf(
      "(ratios: to the student; best = fastest of the %d rounds, the least disturbed by "
      "other processes)\n",
      repeats);
  return 0;
}
