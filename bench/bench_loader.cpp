// Loader throughput: batches and samples per second of the threaded loader (sampling, crop,
// augmentation, stacking) for 1 and 2 worker threads, with the ratio to 1 worker (the baseline,
// measured in the same process), at two patch sizes. The consumer does nothing but take batches,
// so this is the loader's ceiling; compare with the model's step time (bench_train_step; a width-16
// UNet trains at ~0.6 s/step at 64³, ~2.7 s at 96³ on the 2-core development VM): the model waits
// for data only when a batch takes longer to make than a step.
//
//   bench_loader [cohort] [batches] [cache]    defaults: a 2 mm synthetic cohort made in
//                                              /tmp/kdseg_bench_loader_cohort, 12, /tmp/...cache
//
// Two augmentation settings: "paper" (kdseg's defaults: scaling and rotation each with p = 0.2,
// mirrors p = 0.5, intensity always) and "spatial-always" (every sample rotated and scaled, the
// worst case: one grid_sample of all channels per sample).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "kdseg/data/folders.h"
#include "kdseg/data/loader.h"
#include "kdseg/synth/cohort.h"
#include "kdseg/util/memory.h"

namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  kdseg::keep_freed_memory();
  std::string cohort = argc > 1 ? argv[1] : "/tmp/kdseg_bench_loader_cohort";
  const int n_batches = argc > 2 ? std::atoi(argv[2]) : 12;
  const std::string cache_dir = argc > 3 ? argv[3] : "/tmp/kdseg_bench_loader_cache";
  try {
    if (argc <= 1 && !fs::exists(fs::path(cohort) / "labeled")) {
      kdseg::synth::SynthOptions so;
      so.out = cohort;
      so.n_labeled = 4;
      so.n_unlabeled = 0;
      so.n_test = 0;
      so.spacing_mm = 2;
      so.seed = 3;
      so.threads = 2;
      so.quiet = true;
      std::printf("making a 2 mm synthetic cohort of 4 cases in %s ...\n", cohort.c_str());
      auto rep = kdseg::synth::write_cohort(so);
      std::printf("  %d cases in %.1f s\n", rep.n_written, rep.seconds);
    }
    const std::string data =
        fs::exists(fs::path(cohort) / "labeled") ? (fs::path(cohort) / "labeled").string() : cohort;
    kdseg::PreprocessPlan plan;
    plan.spacing = {0, 0, 0};  // as stored
    kdseg::TrainingDataOptions to;
    to.data = {{data, 1.0}};
    to.cache_dir = cache_dir;
    to.split.validation_fraction = 0;
    to.threads = 2;
    const std::array<int64_t, 3> largest{96, 96, 72};
    auto t0 = std::chrono::steady_clock::now();
    kdseg::TrainingData td = kdseg::prepare_training_data(to, plan, largest);
    std::printf("preprocessing: %zu cases, %d built, %.2f s (cache %s)\n", td.pools[0].cases.size(),
                td.n_built, seconds_since(t0), cache_dir.c_str());
    const auto& g = td.pools[0].cases[0]->geometry();
    std::printf("first case: brain box %lldx%lldx%lld at %.1f mm\n",
                static_cast<long long>(g.shape[0]), static_cast<long long>(g.shape[1]),
                static_cast<long long>(g.shape[2]), g.spacing[0]);
    at::set_num_threads(1);

    std::printf("\n%-14s %-10s %7s %10s %10s %12s %8s\n", "augmentation", "patch", "workers",
                "batches/s", "samples/s", "ms/sample*w", "ratio");
    for (const std::string aug_name : {"paper", "spatial-always"}) {
      kdseg::AugmentOptions aug;
      if (aug_name == "spatial-always") aug.p_scale = aug.p_rotate = 1.0;
      for (const std::array<int64_t, 3> patch : {std::array<int64_t, 3>{64, 64, 64}, largest}) {
        kdseg::SamplerOptions so;
        so.patch = patch;
        so.batch = 2;
        auto sampler = std::make_shared<kdseg::Sampler>(td.pools, so);
        double base = 0;
        for (int workers : {1, 2}) {
          kdseg::LoaderOptions lo;
          lo.workers = workers;
          lo.prefetch = 4;
          kdseg::Loader loader(sampler, aug, lo);
          loader.next();  // warm-up (first touch of the mapped cache, allocator)
          const auto t1 = std::chrono::steady_clock::now();
          for (int k = 0; k < n_batches; ++k) loader.next();
          const double s = seconds_since(t1);
          const double samples_per_s = n_batches * so.batch / s;
          if (workers == 1) base = samples_per_s;
          char pstr[32];
          std::snprintf(pstr, sizeof pstr, "%lldx%lldx%lld", static_cast<long long>(patch[0]),
                        static_cast<long long>(patch[1]), static_cast<long long>(patch[2]));
          std::printf("%-14s %-10s %7d %10.2f %10.2f %12.1f %8.2f\n", aug_name.c_str(), pstr,
                      workers, n_batches / s, samples_per_s, 1000.0 * workers / samples_per_s,
                      samples_per_s / base);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
  return 0;
}
