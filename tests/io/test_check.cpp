// kdseg check's library half: every problem of a folder in one pass, each naming its file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "kdseg/io/check.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::phantom_labels;
using test::ScratchDir;
using test::write_case;
namespace fs = std::filesystem;

TEST(Check, ReportsQformSformDisagreementAndBadLabelsTogether) {
  ScratchDir dir("check_lib");
  const std::array<int64_t, 3> dim{12, 12, 10};
  LabelMap l = phantom_labels(dim, {6, 6, 5}, 4);
  write_case(dir.str(), "A", Layout::brats2021, l);
  write_case(dir.str(), "B", Layout::brats2021, l);
  // A: the T2's qform is rotated 90 degrees away from its sform.
  const std::string t2 = (dir.path() / "A" / "A_t2.nii.gz").string();
  Volume v = read_volume(t2);
  v.source.quatern_d = std::sqrt(0.5);
  v.source.quatern_b = v.source.quatern_c = 0;
  write_volume(t2, v);
  // B: a label 3, outside the BraTS 2018-2021 convention.
  LabelMap bad = l;
  bad.data[7] = 3;
  write_labels((dir.path() / "B" / "B_seg.nii.gz").string(), bad);
  CheckOptions opt;
  opt.dir = dir.str();
  opt.quiet = true;
  CheckReport r = check_dataset(opt);
  ASSERT_EQ(r.cases.size(), 2u);
  ASSERT_EQ(r.problems.size(), 2u) << format_check_report(r);
  EXPECT_NE(r.problems[0].find("A_t2.nii.gz: qform"), std::string::npos) << r.problems[0];
  EXPECT_NE(r.problems[0].find("disagree"), std::string::npos);
  EXPECT_NE(r.problems[1].find("B_seg.nii.gz"), std::string::npos) << r.problems[1];
  EXPECT_NE(r.problems[1].find("outside the brats2021 convention: 3"), std::string::npos);
  std::string text = format_check_report(r);
  EXPECT_NE(text.find("labels 0:"), std::string::npos);
  EXPECT_NE(text.find("2 problem(s):"), std::string::npos);
}

// BraTS 2024: the 2023 names with 4 = resection cavity. Found, read as background, and said so.
TEST(Check, Brats2024CavityIsReadAndExplained) {
  ScratchDir dir("check_2024");
  const std::array<int64_t, 3> dim{12, 12, 10};
  const LabelMap l = phantom_labels(dim, {6, 6, 5}, 4);
  write_case(dir.str(), "BraTS-GLI-02000-100", Layout::brats2023, l);
  write_case(dir.str(), "BraTS-GLI-02001-100", Layout::brats2023, l);
  const std::string seg =
      (dir.path() / "BraTS-GLI-02000-100" / "BraTS-GLI-02000-100-seg.nii.gz").string();
  LabelMap with_rc = read_labels(seg);
  for (int i = 0; i < 5; ++i) with_rc.data[i] = 4;
  write_labels(seg, with_rc);
  CheckOptions opt;
  opt.dir = dir.str();
  opt.quiet = true;
  CheckReport r = check_dataset(opt);
  const std::string text = format_check_report(r);
  EXPECT_TRUE(r.problems.empty()) << text;
  EXPECT_EQ(r.n_resection_cavity_cases, 1);
  EXPECT_NE(text.find("brats2023 layout (labels brats2024: 4 = resection cavity (RC) in 1 case(s); "
                      "RC is not tumour (TC = ET + NETC, WT = ET + NETC + SNFH"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("4:5 (4 = resection cavity, read as background)"), std::string::npos) << text;
  // Named brats2021, the same folder's 3s are wrong.
  opt.labels = "brats2021";
  r = check_dataset(opt);
  ASSERT_FALSE(r.problems.empty());
  EXPECT_NE(r.problems[0].find("outside the brats2021 convention: 3"), std::string::npos)
      << r.problems[0];
  opt.labels = "brats2025";
  EXPECT_THROW(check_dataset(opt), Error);
}

// 4 everywhere and 3 nowhere: BraTS 2018-2021 values under 2023 names would read as cavities and
// lose every ET. A problem, unless the user names the labels brats2024.
TEST(Check, CavityWithoutAnyEnhancingTumourIsAskedAbout) {
  ScratchDir dir("check_2024_no_et");
  const std::array<int64_t, 3> dim{12, 12, 10};
  LabelMap l = phantom_labels(dim, {6, 6, 5}, 4);
  write_case(dir.str(), "X", Layout::brats2021, l);  // values {0, 1, 2, 4}
  fs::create_directories(dir.path() / "BraTS-GLI-00001-000");
  for (const auto& [from, to] :
       std::vector<std::pair<std::string, std::string>>{{"X_t1", "-t1n"},
                                                        {"X_t1ce", "-t1c"},
                                                        {"X_t2", "-t2w"},
                                                        {"X_flair", "-t2f"},
                                                        {"X_seg", "-seg"}})
    fs::rename(dir.path() / "X" / (from + ".nii.gz"),
               dir.path() / "BraTS-GLI-00001-000" / ("BraTS-GLI-00001-000" + to + ".nii.gz"));
  fs::remove(dir.path() / "X");
  CheckOptions opt;
  opt.dir = dir.str();
  opt.quiet = true;
  CheckReport r = check_dataset(opt);
  ASSERT_EQ(r.problems.size(), 1u) << format_check_report(r);
  EXPECT_NE(r.problems[0].find("no case has an enhancing tumour (3)"), std::string::npos)
      << r.problems[0];
  EXPECT_NE(r.problems[0].find("--labels brats2024"), std::string::npos);
  opt.labels = "brats2024";
  r = check_dataset(opt);
  EXPECT_TRUE(r.problems.empty()) << format_check_report(r);
}

TEST(Check, ReportsA4dModalityAndPixdimAgainstTheSform) {
  ScratchDir dir("check_4d_pixdim");
  const std::array<int64_t, 3> dim{12, 12, 10};
  LabelMap l = phantom_labels(dim, {6, 6, 5}, 4);
  write_case(dir.str(), "C", Layout::brats2021, l);
  write_case(dir.str(), "D", Layout::brats2021, l);
  // C: its T1 file is a series of two volumes.
  const std::string t1 = (dir.path() / "C" / "C_t1.nii.gz").string();
  const Volume one = read_volume(t1);
  Volume two = like<float>(one, 2);
  std::copy(one.data.begin(), one.data.end(), two.data.begin());
  std::copy(one.data.begin(), one.data.end(), two.data.begin() + one.n_voxels());
  write_volume(t1, two);
  // D: every file's sform has 2 mm columns, pixdim still says 1 mm (no qform).
  for (const char* f : {"D_t1", "D_t1ce", "D_t2", "D_flair"}) {
    const std::string path = (dir.path() / "D" / (std::string(f) + ".nii.gz")).string();
    Volume v = read_volume(path);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) v.source.srow[i][j] *= 2;
    v.source.qform_code = 0;
    write_volume(path, v);
    EXPECT_DOUBLE_EQ(read_volume(path).spacing[0], 2.0) << "spacing from the sform's columns";
  }
  CheckOptions opt;
  opt.dir = dir.str();
  opt.quiet = true;
  CheckReport r = check_dataset(opt);
  const std::string text = format_check_report(r);
  EXPECT_NE(text.find("C_t1.nii.gz: a 4D image of 2 volumes where one 3D t1 volume is expected"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("D_flair.nii.gz: pixdim gives 1x1x1 mm but the sform's columns 2x2x2 mm"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace kdseg
