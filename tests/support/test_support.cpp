#include "support/test_support.h"

#include <unistd.h>

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "kdseg/io/nifti_header.h"

namespace kdseg::test {

namespace fs = std::filesystem;

ScratchDir::ScratchDir(const std::string& name) {
  path_ = fs::temp_directory_path() / ("kdseg_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string ScratchDir::str(const std::string& child) const {
  return child.empty() ? path_.string() : (path_ / child).string();
}

RunResult run_command(const std::string& command_line) {
  RunResult r;
  std::string cmd = command_line + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), &pclose);
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe.get())) > 0) r.output.append(buf.data(), n);
  int status = pclose(pipe.release());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

RunResult run_kdseg(const std::string& args) {
  return run_command(std::string(KDSEG_BINARY) + " " + args);
}

template <class T>
Image<T> make_image(const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing,
                    T value, int64_t n_channels) {
  Image<T> img;
  img.dim = dim;
  img.spacing = spacing;
  img.n_channels = n_channels;
  img.data.assign(static_cast<size_t>(dim[0] * dim[1] * dim[2] * n_channels), value);
  // Canonical RAS voxels stored as an LPS file, like BraTS: file x and y run the other way.
  Mat44 lps{};
  lps[0] = {-spacing[0], 0, 0, (dim[0] - 1) * spacing[0]};
  lps[1] = {0, -spacing[1], 0, (dim[1] - 1) * spacing[1]};
  lps[2] = {0, 0, spacing[2], 0};
  lps[3] = {0, 0, 0, 1};
  img.source =
      make_header(dim, lps, n_channels, std::is_same_v<T, uint8_t> ? kNiftiUInt8 : kNiftiFloat32);
  img.to_canonical = axis_map_to_ras(lps);
  return img;
}

template Image<float> make_image(const std::array<int64_t, 3>&, const std::array<double, 3>&, float,
                                 int64_t);
template Image<uint8_t> make_image(const std::array<int64_t, 3>&, const std::array<double, 3>&,
                                   uint8_t, int64_t);

}  // namespace kdseg::test

#include "kdseg/io/nifti.h"

namespace kdseg::test {

LabelMap phantom_labels(const std::array<int64_t, 3>& dim, const std::array<double, 3>& c, double r,
                        const std::array<double, 3>& spacing) {
  LabelMap l = make_image<uint8_t>(dim, spacing, 0);
  for (int64_t z = 0; z < dim[2]; ++z)
    for (int64_t y = 0; y < dim[1]; ++y)
      for (int64_t x = 0; x < dim[0]; ++x) {
        double dx = (x - c[0]) * spacing[0], dy = (y - c[1]) * spacing[1],
               dz = (z - c[2]) * spacing[2];
        double d = std::sqrt(dx * dx + dy * dy + dz * dz);
        if (d <= r / 2)
          l.at(x, y, z) = 1;
        else if (d <= 2 * r / 3)
          l.at(x, y, z) = 4;
        else if (d <= r)
          l.at(x, y, z) = 2;
      }
  return l;
}

const char* const kNnunetDatasetJson = R"({
  "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
  "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
             "enhancing tumor": [3]},
  "regions_class_order": [1, 2, 3],
  "numTraining": 1,
  "file_ending": ".nii.gz"
})";

void write_case(const std::string& root, const std::string& id, Layout layout,
                const LabelMap& labels, bool with_seg) {
  namespace fs = std::filesystem;
  auto modality = [&](int m) {
    Volume v = like<float>(labels);
    for (size_t i = 0; i < v.data.size(); ++i)
      v.data[i] = 100.f * (m + 1) + 10.f * labels.data[i] + static_cast<float>(i % (5 + m));
    return v;
  };
  LabelMap seg = labels;
  labels_to_convention(seg, layout);
  if (layout == Layout::msd) {
    // 4D image in the Task01 order FLAIR, T1, T1Gd, T2.
    Volume v4 = like<float>(labels, 4);
    const int internal_of_frame[4] = {3, 0, 1, 2};
    for (int f = 0; f < 4; ++f) {
      Volume m = modality(internal_of_frame[f]);
      std::copy(m.data.begin(), m.data.end(), v4.channel(f));
    }
    write_volume((fs::path(root) / "imagesTr" / (id + ".nii.gz")).string(), v4);
    if (with_seg) write_labels((fs::path(root) / "labelsTr" / (id + ".nii.gz")).string(), seg);
    return;
  }
  if (layout == Layout::nnunet) {
    const int channel_of[4] = {1, 2, 3, 0};  // T1, T1ce, T2, FLAIR as in kNnunetDatasetJson
    for (int m = 0; m < 4; ++m) {
      char name[32];
      std::snprintf(name, sizeof name, "_%04d.nii.gz", channel_of[m]);
      write_volume((fs::path(root) / (with_seg ? "imagesTr" : "imagesTs") / (id + name)).string(),
                   modality(m));
    }
    if (with_seg) write_labels((fs::path(root) / "labelsTr" / (id + ".nii.gz")).string(), seg);
    if (!fs::exists(fs::path(root) / "dataset.json")) {
      std::ofstream(fs::path(root) / "dataset.json") << kNnunetDatasetJson;
    }
    return;
  }
  const bool y2023 = layout == Layout::brats2023 || layout == Layout::brats2024;
  const char* names2021[4] = {"_t1", "_t1ce", "_t2", "_flair"};
  const char* names2023[4] = {"-t1n", "-t1c", "-t2w", "-t2f"};
  fs::path folder = fs::path(root) / id;
  for (int m = 0; m < 4; ++m) {
    WriteOptions o;
    o.datatype = kNiftiInt16;
    write_volume((folder / (id + (y2023 ? names2023[m] : names2021[m]) + ".nii.gz")).string(),
                 modality(m), o);
  }
  if (with_seg) write_labels((folder / (id + (y2023 ? "-seg" : "_seg") + ".nii.gz")).string(), seg);
}

}  // namespace kdseg::test
