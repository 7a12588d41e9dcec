// kdseg check's library half: every problem of a folder in one pass, each naming its file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "kdseg/io/check.h"
#include "kdseg/io/nifti.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::phantom_labels;
using test::ScratchDir;
using test::write_case;

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

}  // namespace
}  // namespace kdseg
