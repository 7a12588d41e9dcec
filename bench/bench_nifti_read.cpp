// Reading one BraTS case (four 240x240x155 int16 modalities, .nii.gz): libdeflate vs zlib, in the
// same process, on the same files. Prints the time per case and the ratio to the zlib baseline.
//
//   bench_nifti_read [--reps N] [--dir DIR]
//
// The files are made here (smooth brain-like intensities with noise, zero background, gzip level 6
// as ITK and nibabel write them), so the benchmark needs no data.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/memory.h"

using namespace kdseg;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// An ellipsoidal "brain" of smoothly varying int16 intensities with noise.
Volume make_modality(int seed) {
  Volume v;
  v.dim = {240, 240, 155};
  v.data.assign(240 * 240 * 155, 0.f);
  Mat44 lps{};
  lps[0] = {-1, 0, 0, 0};
  lps[1] = {0, -1, 0, 239};
  lps[2] = {0, 0, 1, 0};
  lps[3] = {0, 0, 0, 1};
  v.source = make_header(v.dim, lps, 1, kNiftiInt16);
  v.to_canonical = axis_map_to_ras(lps);
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.f, 12.f);
  for (int64_t z = 0; z < 155; ++z)
    for (int64_t y = 0; y < 240; ++y)
      for (int64_t x = 0; x < 240; ++x) {
        double dx = (x - 120) / 70.0, dy = (y - 120) / 90.0, dz = (z - 77) / 65.0;
        if (dx * dx + dy * dy + dz * dz > 1) continue;
        double tissue =
            400 + 150 * std::sin(x * 0.21 + seed) * std::cos(y * 0.17) + 80 * std::sin(z * 0.3);
        v.at(x, y, z) = static_cast<float>(std::max(1.0, tissue + noise(rng)));
      }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  std::string dir = (fs::temp_directory_path() / "kdseg_bench_nifti").string();
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--reps")
      reps = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--dir")
      dir = argv[i + 1];
  }
  fs::create_directories(dir);
  std::vector<std::string> files;
  const char* names[] = {"t1", "t1ce", "t2", "flair"};
  uint64_t compressed = 0;
  for (int m = 0; m < 4; ++m) {
    std::string path = (fs::path(dir) / (std::string("BENCH_") + names[m] + ".nii.gz")).string();
    if (!fs::exists(path)) {
      WriteOptions o;
      o.datatype = kNiftiInt16;
      o.compression = 6;
      write_volume(path, make_modality(m), o);
    }
    compressed += fs::file_size(path);
    files.push_back(path);
  }
  std::printf("case: 4 x 240x240x155 int16 .nii.gz, %.1f MiB compressed, %.1f MiB of voxels\n",
              compressed / 1048576.0, 4 * 240 * 240 * 155 * 2 / 1048576.0);

  auto time_case = [&](Inflater inflater) {
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& f : files) {
        Volume v = read_volume(f, false, inflater);
        if (v.data.empty()) std::abort();
      }
      best = std::min(best, seconds_since(t0));
    }
    return best;
  };
  auto time_inflate = [&](Inflater inflater) {
    std::vector<std::vector<uint8_t>> raw;
    for (const auto& f : files) raw.push_back(read_file(f));
    double best = 1e9;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      for (const auto& b : raw) gunzip(b.data(), b.size(), "bench", inflater);
      best = std::min(best, seconds_since(t0));
    }
    return best;
  };
  const double zlib_case = time_case(Inflater::zlib);
  const double deflate_case = time_case(Inflater::libdeflate);
  const double zlib_inflate = time_inflate(Inflater::zlib);
  const double deflate_inflate = time_inflate(Inflater::libdeflate);
  // What `kdseg` itself runs with: freed buffers kept for reuse (util/memory.h).
  const bool kept = keep_freed_memory();
  const double kept_zlib = time_case(Inflater::zlib);
  const double kept_case = time_case(Inflater::libdeflate);
  std::printf("best of %d, one thread:\n", reps);
  std::printf("  read case, zlib (baseline)  %7.3f s   1.00x\n", zlib_case);
  std::printf("  read case, libdeflate       %7.3f s   %.2fx faster\n", deflate_case,
              zlib_case / deflate_case);
  if (kept) {
    std::printf("  with freed memory kept for reuse (as the kdseg process runs):\n");
    std::printf("  read case, zlib              %7.3f s   %.2fx faster\n", kept_zlib,
                zlib_case / kept_zlib);
    std::printf("  read case, libdeflate        %7.3f s   %.2fx faster (%.2fx vs zlib here)\n",
                kept_case, zlib_case / kept_case, kept_zlib / kept_case);
  }
  std::printf("  inflate only, zlib          %7.3f s   1.00x\n", zlib_inflate);
  std::printf("  inflate only, libdeflate    %7.3f s   %.2fx faster\n", deflate_inflate,
              zlib_inflate / deflate_inflate);
  std::printf(
      "  fresh-memory libdeflate read = %.0f%% inflate, %.0f%% file read + convert + "
      "reorient (mostly first-touch page faults)\n",
      100 * deflate_inflate / deflate_case, 100 * (1 - deflate_inflate / deflate_case));
  return 0;
}
