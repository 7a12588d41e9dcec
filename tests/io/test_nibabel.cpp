// Round trips through another reader: nibabel (Debian's python3-nibabel, via /usr/bin/python3)
// reads what kdseg writes and kdseg reads what nibabel writes; both agree on voxels in canonical
// orientation and on the affine.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "kdseg/io/nifti.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::ScratchDir;

const std::string kScript = std::string(KDSEG_SOURCE_DIR) + "/tests/io/nibabel_roundtrip.py";

bool have_nibabel() {
  return test::run_command(std::string(KDSEG_SYSTEM_PYTHON) + " -c 'import nibabel'").exit_code ==
         0;
}

// Canonical voxels as nibabel_roundtrip.py dumps them.
std::vector<float> load_dump(const std::string& path, std::array<int64_t, 4>& shape) {
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(shape.data()), 32);
  std::vector<float> v(shape[0] * shape[1] * shape[2] * shape[3]);
  f.read(reinterpret_cast<char*>(v.data()), v.size() * 4);
  return v;
}

void save_dump(const std::string& path, const Volume& v) {
  std::ofstream f(path, std::ios::binary);
  std::array<int64_t, 4> shape{v.dim[0], v.dim[1], v.dim[2], v.n_channels};
  f.write(reinterpret_cast<const char*>(shape.data()), 32);
  f.write(reinterpret_cast<const char*>(v.data.data()), v.data.size() * 4);
}

void save_affine(const std::string& path, const NiftiHeader& h) {
  std::ofstream f(path);
  Mat44 m = affine(h);
  f.precision(10);
  for (auto& row : m) f << row[0] << " " << row[1] << " " << row[2] << " " << row[3] << "\n";
}

TEST(Nibabel, KdsegReadsWhatNibabelWrites) {
  if (!have_nibabel())
    GTEST_SKIP() << "python3-nibabel not installed (scripts/setup.sh installs it)";
  ScratchDir dir("nb_read");
  auto r =
      test::run_command(std::string(KDSEG_SYSTEM_PYTHON) + " " + kScript + " write " + dir.str());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"nb_int16_lps.nii.gz", "nb_f64_oblique.nii", "nb_int32_bigendian.nii",
                           "nb_uint8_4d.nii.gz"}) {
    SCOPED_TRACE(name);
    Volume v = read_volume(dir.str(name));
    std::string base = dir.str(name).substr(0, dir.str(name).find(".nii"));
    std::array<int64_t, 4> shape;
    std::vector<float> expect = load_dump(base + ".f32", shape);
    ASSERT_EQ(v.dim[0], shape[0]);
    ASSERT_EQ(v.dim[1], shape[1]);
    ASSERT_EQ(v.dim[2], shape[2]);
    ASSERT_EQ(v.n_channels, shape[3]);
    for (size_t i = 0; i < expect.size(); ++i) ASSERT_NEAR(v.data[i], expect[i], 1e-4) << i;
  }
  Volume be = read_volume(dir.str("nb_int32_bigendian.nii"));
  EXPECT_TRUE(be.source.swapped);
  EXPECT_EQ(be.source.version, 1);
  EXPECT_EQ(read_volume(dir.str("nb_f64_oblique.nii")).source.version, 2);
  // Spacing follows the axes: the permuted file has 1.5 mm along z and 1 mm in-plane.
  EXPECT_NEAR(be.spacing[2], 1.5, 1e-6);
}

TEST(Nibabel, NibabelReadsWhatKdsegWrites) {
  if (!have_nibabel())
    GTEST_SKIP() << "python3-nibabel not installed (scripts/setup.sh installs it)";
  ScratchDir dir("nb_write");
  // A BraTS-like LPS int16 volume, a NIfTI-2 float 4D volume, and a label map re-written like an
  // oblique nibabel input (geometry copied from it).
  Volume a = test::make_image<float>({9, 7, 5}, {1.0, 1.0, 1.0}, 0.f);
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = static_cast<float>(i % 97);
  WriteOptions o16;
  o16.datatype = kNiftiInt16;
  write_volume(dir.str("kd_int16.nii.gz"), a, o16);
  save_dump(dir.str("kd_int16.f32"), a);
  save_affine(dir.str("kd_int16.affine"), a.source);

  Volume b = test::make_image<float>({4, 6, 3}, {0.8, 0.8, 2.5}, 0.f, 3);
  for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = 0.25f * static_cast<float>(i);
  WriteOptions o2;
  o2.version = 2;
  write_volume(dir.str("kd_f32_4d.nii"), b, o2);
  save_dump(dir.str("kd_f32_4d.f32"), b);
  save_affine(dir.str("kd_f32_4d.affine"), b.source);

  auto r =
      test::run_command(std::string(KDSEG_SYSTEM_PYTHON) + " " + kScript + " write " + dir.str());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Volume oblique = read_volume(dir.str("nb_f64_oblique.nii"));
  LabelMap seg = like<uint8_t>(oblique);
  for (size_t i = 0; i < seg.data.size(); ++i) seg.data[i] = static_cast<uint8_t>(i % 5);
  write_labels(dir.str("kd_labels_like_oblique.nii.gz"), seg);
  Volume seg_f = like<float>(seg);
  for (size_t i = 0; i < seg.data.size(); ++i) seg_f.data[i] = seg.data[i];
  save_dump(dir.str("kd_labels_like_oblique.f32"), seg_f);
  save_affine(dir.str("kd_labels_like_oblique.affine"), oblique.source);

  r = test::run_command(std::string(KDSEG_SYSTEM_PYTHON) + " " + kScript + " check " + dir.str());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("checked 3"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg
