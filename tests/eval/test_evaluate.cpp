// kdseg evaluate with lesion-wise scores: on by default for BraTS 2023/2024 references, off for
// 2018-2021 ones unless asked, written to metrics.csv and summary.json; BraTS 2024 cavities read.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "kdseg/eval/evaluate.h"
#include "kdseg/io/dataset.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

namespace fs = std::filesystem;
using test::phantom_labels;
using test::ScratchDir;
using test::write_case;

const std::array<int64_t, 3> kDim{24, 20, 16};

LabelMap tumour() {
  return phantom_labels(kDim, {14, 10, 8}, 5);  // one lesion per region, each > 50 voxels
}

// A 27-voxel oedema cube in a corner, away from the tumour: a false positive of WT alone.
LabelMap with_false_oedema(LabelMap l) {
  for (int64_t z = 0; z < 3; ++z)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 3; ++x) l.data[(z * kDim[1] + y) * kDim[0] + x] = 2;
  return l;
}

double value(const EvaluateReport& r, size_t row, const std::string& column) {
  const auto it = std::find(r.columns.begin(), r.columns.end(), column);
  EXPECT_NE(it, r.columns.end()) << column;
  return it == r.columns.end() ? NAN : r.rows[row][static_cast<size_t>(it - r.columns.begin())];
}

// Two BraTS 2024 cases (one with a cavity in its reference), predicted in their own values:
// A exactly, B with a false oedema blob.
void make_2024(const ScratchDir& dir) {
  for (const char* id : {"BraTS-GLI-02000-100", "BraTS-GLI-02001-100"})
    write_case(dir.str("ref"), id, Layout::brats2023, tumour());
  const std::string seg = dir.str("ref/BraTS-GLI-02000-100/BraTS-GLI-02000-100-seg.nii.gz");
  LabelMap rc = read_labels(seg);
  for (int i = 0; i < 30; ++i) rc.data[static_cast<size_t>(kDim[0] * kDim[1] * 15 + i)] = 4;
  write_labels(seg, rc);
  LabelMap a = tumour(), b = with_false_oedema(tumour());
  labels_to_convention(a, Layout::brats2023);
  labels_to_convention(b, Layout::brats2023);
  fs::create_directories(dir.path() / "pred");
  write_labels(dir.str("pred/BraTS-GLI-02000-100.nii.gz"), a);
  write_labels(dir.str("pred/BraTS-GLI-02001-100.nii.gz"), b);
}

TEST(Evaluate, LesionWiseByDefaultOnBrats2024WithItsCavities) {
  ScratchDir dir("eval_2024");
  make_2024(dir);
  EvaluateOptions opt;
  opt.pred = dir.str("pred");
  opt.ref = dir.str("ref");
  opt.out = dir.str("eval");
  opt.quiet = true;
  const EvaluateReport r = evaluate(opt);
  ASSERT_TRUE(r.failures.empty()) << r.failures[0];
  ASSERT_EQ(r.ids.size(), 2u);
  ASSERT_TRUE(r.lesion_wise);
  EXPECT_EQ(r.columns.size(), 18u + 15u);
  // A: perfect, the cavity (background) costs nothing.
  for (const char* c : {"lw_dice_et", "lw_dice_wt", "lw_dice_tc", "dice_wt"})
    EXPECT_DOUBLE_EQ(value(r, 0, c), 1.0) << c;
  EXPECT_DOUBLE_EQ(value(r, 0, "lw_hd95_wt"), 0.0);
  // B: the false blob is a whole lesion-wise term for WT, a sliver of whole-volume Dice.
  EXPECT_DOUBLE_EQ(value(r, 1, "lw_dice_wt"), 0.5);
  EXPECT_DOUBLE_EQ(value(r, 1, "lw_hd95_wt"), kLesionHd95Missed / 2);
  EXPECT_DOUBLE_EQ(value(r, 1, "lw_fp_wt"), 1);
  EXPECT_DOUBLE_EQ(value(r, 1, "lw_tp_wt"), 1);
  EXPECT_DOUBLE_EQ(value(r, 1, "lw_dice_et"), 1.0);
  EXPECT_GT(value(r, 1, "dice_wt"), 0.95);
  // summary.json: the columns' statistics, the definition, and the cavities met.
  const auto s = nlohmann::json::parse(std::ifstream(dir.str("eval/summary.json")));
  EXPECT_DOUBLE_EQ(s["columns"]["lw_dice_wt"]["mean"].get<double>(), 0.75);
  EXPECT_EQ(s["lesion_wise"]["dilation"], 3);
  EXPECT_EQ(s["lesion_wise"]["min_volume_mm3"], 50.0);
  EXPECT_EQ(s["lesion_wise"]["hd95_missed_mm"], 374.0);
  EXPECT_EQ(s["ref_labels"], "brats2024");
  EXPECT_EQ(s["resection_cavity_cases"]["ref"], 1);
  EXPECT_EQ(s["resection_cavity_cases"]["pred"], 0);
  std::ifstream csv(dir.str("eval/metrics.csv"));
  std::string header;
  std::getline(csv, header);
  EXPECT_NE(header.find(",vol_ref_tc_ml,lw_dice_et,lw_dice_wt,lw_dice_tc,lw_hd95_et"),
            std::string::npos)
      << header;
  const std::string table = format_summary_table(r);
  EXPECT_NE(table.find("Lesion-wise (BraTS 2023: lesions joined by a 3-voxel dilation, > 50 mm³)"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("WT   0.750 ± 0.354 (med 0.750)"), std::string::npos) << table;
  EXPECT_NE(table.find("2 / 0 / 1"), std::string::npos) << table;  // WT: found, missed, false
  // Off when asked.
  opt.lesion_wise = "off";
  EXPECT_EQ(evaluate(opt).columns.size(), 18u);
  opt.lesion_wise = "yes";
  EXPECT_THROW(evaluate(opt), Error);
}

TEST(Evaluate, Brats2021IsWholeVolumeUnlessAskedWithItsOptions) {
  ScratchDir dir("eval_2021");
  write_case(dir.str("ref"), "CASE_0", Layout::brats2021, tumour());
  const LabelMap p = with_false_oedema(tumour());
  fs::create_directories(dir.path() / "pred");
  write_labels(dir.str("pred/CASE_0.nii.gz"), p);
  EvaluateOptions opt;
  opt.pred = dir.str("pred");
  opt.ref = dir.str("ref");
  opt.out = dir.str("eval");
  opt.quiet = true;
  EvaluateReport r = evaluate(opt);
  EXPECT_FALSE(r.lesion_wise);
  EXPECT_EQ(r.columns.size(), 18u);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir.str("eval/summary.json")))["lesion_wise"],
            false);
  EXPECT_EQ(format_summary_table(r).find("Lesion-wise"), std::string::npos);
  opt.lesion_wise = "on";
  r = evaluate(opt);
  ASSERT_TRUE(r.lesion_wise);
  EXPECT_DOUBLE_EQ(value(r, 0, "lw_dice_wt"), 0.5);
  // The options reach the scores: with a threshold above every lesion, only the false positive
  // is left, and it is as far off as anything can be.
  opt.lesion.min_volume_mm3 = 1e6;
  r = evaluate(opt);
  EXPECT_DOUBLE_EQ(value(r, 0, "lw_dice_wt"), 0.0);
  EXPECT_DOUBLE_EQ(value(r, 0, "lw_tp_wt"), 0);
  EXPECT_DOUBLE_EQ(value(r, 0, "lw_dice_et"), 1.0);  // nothing kept, nothing false: 1
  opt.lesion.min_volume_mm3 = -1;
  EXPECT_THROW(evaluate(opt), Error);
}

TEST(Evaluate, TheCommandTakesTheLesionFlags) {
  ScratchDir dir("eval_cli_lesion");
  make_2024(dir);
  const auto r = test::run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + dir.str("ref") +
                                 " --out " + dir.str("eval") +
                                 " --lesion-dilation 1 --lesion-min-volume 20 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Lesion-wise (BraTS 2023: lesions joined by a 1-voxel dilation, > 20"),
            std::string::npos)
      << r.output;
  const auto s = nlohmann::json::parse(std::ifstream(dir.str("eval/summary.json")));
  EXPECT_EQ(s["lesion_wise"]["dilation"], 1);
  EXPECT_EQ(s["lesion_wise"]["min_volume_mm3"], 20.0);
  const auto c = nlohmann::json::parse(std::ifstream(dir.str("eval/config.json")));
  EXPECT_NE(c.dump().find("lesion-wise"), std::string::npos) << c.dump();
  const auto off =
      test::run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + dir.str("ref") +
                      " --out " + dir.str("eval2") + " --lesion-wise off --quiet");
  ASSERT_EQ(off.exit_code, 0) << off.output;
  EXPECT_EQ(off.output.find("Lesion-wise"), std::string::npos) << off.output;
}

}  // namespace
}  // namespace kdseg
