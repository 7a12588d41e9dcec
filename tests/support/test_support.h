#pragma once
// Helpers shared by the tests: scratch folders, running the kdseg binary, tiny phantoms.
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>

#include "kdseg/io/image.h"

namespace kdseg::test {

// A fresh empty folder under the build tree's temp area, removed when the object dies.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name);
  ~ScratchDir();
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& child = "") const;

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command line and captures its output.
RunResult run_command(const std::string& command_line);
// Runs the kdseg executable with the given argument string.
RunResult run_kdseg(const std::string& args);

// An image of `dim` voxels with a BraTS-like LPS affine (diag(-s,-s,s)), filled with `value`.
template <class T>
Image<T> make_image(const std::array<int64_t, 3>& dim, const std::array<double, 3>& spacing,
                    T value, int64_t n_channels = 1);

}  // namespace kdseg::test

#include "kdseg/io/dataset.h"

namespace kdseg::test {

// A tumour phantom in internal labels: oedema ball of radius r, core (NCR) of r/2, enhancing
// shell between r/2 and 2r/3, centred at `c` (canonical voxels).
LabelMap phantom_labels(const std::array<int64_t, 3>& dim, const std::array<double, 3>& c, double r,
                        const std::array<double, 3>& spacing = {1, 1, 1});

// Writes case `id` under `root` in `layout` (BraTS 2021/2023 folders, MSD imagesTr/labelsTr, or
// nnU-Net imagesTr/<id>_000k + labelsTr + dataset.json): four modalities on `labels`' grid with
// distinct intensities, and the label map in the layout's convention unless `with_seg` is false.
// The nnU-Net dataset.json (written when absent) lists the channels in the order FLAIR, T1, T1ce,
// T2 and the labels as nnU-Net's BraTS regions (1 ED, 2 NCR, 3 ET): kNnunetDatasetJson.
extern const char* const kNnunetDatasetJson;
void write_case(const std::string& root, const std::string& id, Layout layout,
                const LabelMap& labels, bool with_seg = true);

}  // namespace kdseg::test
