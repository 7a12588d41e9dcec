// Ensembles, predict and pseudo-label on tiny phantom cases with tiny untrained networks
// (infer/ensemble.h, infer/predict.h, distill/pseudo_label.h).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "kdseg/data/folders.h"
#include "kdseg/distill/pseudo_label.h"
#include "kdseg/infer/predict.h"
#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {
namespace fs = std::filesystem;

std::string save_tiny(const fs::path& dir, const std::string& arch, uint64_t seed,
                      std::array<double, 3> spacing = {0, 0, 0}) {
  torch::manual_seed(seed);
  SegNet net = make_net(arch, test::tiny_config(arch));
  PreprocessPlan plan;
  plan.spacing = spacing;
  plan.patch = {16, 16, 16};
  const std::string path = (dir / (arch + std::to_string(seed) + ".pt")).string();
  save_checkpoint(path, *net, plan);
  return path;
}

LabelMap phantom(double r = 7) {
  return test::phantom_labels({30, 26, 22}, {15, 12, 11}, r);
}

InferenceOptions quick() {
  InferenceOptions o;
  o.tta = "none";
  return o;
}

TEST(Ensemble, OfIdenticalModelsEqualsTheModelAndWeightsAverage) {
  test::ScratchDir dir("ensemble_identical");
  test::write_case(dir.str("data"), "C1", Layout::brats2021, phantom());
  const std::string a = save_tiny(dir.path(), "student", 1), b = save_tiny(dir.path(), "unet", 2);
  Dataset ds = discover_dataset(dir.str("data"));
  CaseData data = load_case(ds.cases[0], ds.layout);
  at::Tensor pa = Ensemble({a}, {}, quick()).predict_case(data);
  at::Tensor pb = Ensemble({b}, {}, quick()).predict_case(data);
  ASSERT_EQ(pa.sizes(), (std::vector<int64_t>{3, 30, 26, 22}));
  EXPECT_TRUE(at::allclose(Ensemble({a, a, a}, {}, quick()).predict_case(data), pa, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(Ensemble({a, b}, {1, 3}, quick()).predict_case(data), (pa + 3 * pb) / 4,
                           1e-5, 1e-6));
  EXPECT_FALSE(at::allclose(pa, pb));  // the two members do differ
  EXPECT_THROW(Ensemble({a, b}, {1}, quick()), std::exception);
  EXPECT_THROW(Ensemble({(dir.path() / "missing.pt").string()}, {}, quick()), std::exception);
}

TEST(Predict, ResamplingToTheModelSpacingAndBackKeepsTheInputGeometry) {
  test::ScratchDir dir("predict_geometry");
  test::write_case(dir.str("data"), "C1", Layout::brats2021, phantom());
  PredictOptions o;
  o.models = {save_tiny(dir.path(), "student", 1, {2.0, 2.0, 2.0})};  // data at 1 mm
  o.in = dir.str("data");
  o.out = dir.str("pred");
  o.inference = quick();
  o.save_probs = true;
  o.quiet = true;
  PredictReport r = predict_folder(o);
  ASSERT_TRUE(r.failures.empty()) << r.failures[0];
  ASSERT_EQ(r.written, std::vector<std::string>{"C1"});
  const Volume t1 = read_volume(dir.str("data/C1/C1_t1.nii.gz"));
  const LabelMap out = read_labels(dir.str("pred/C1.nii.gz"));
  EXPECT_TRUE(same_grid(out, t1));
  EXPECT_EQ(out.source.sform_code, t1.source.sform_code);
  for (uint8_t v : out.data) ASSERT_TRUE(v == 0 || v == 1 || v == 2 || v == 4);
  const Volume probs = read_volume(dir.str("pred/C1_prob.nii.gz"));
  EXPECT_EQ(probs.n_channels, 3);
  EXPECT_TRUE(same_grid(probs, t1));
  // A rerun skips the finished case; --overwrite redoes it
  EXPECT_EQ(predict_folder(o).skipped, std::vector<std::string>{"C1"});
  o.overwrite = true;
  EXPECT_EQ(predict_folder(o).written, std::vector<std::string>{"C1"});
}

// A labelled BraTS 2024 case (4 = resection cavity in its seg) is read and predicted; the labels
// are written in the dataset's own values (ET = 3), background as 0, and never the cavity (4).
TEST(Predict, Brats2024CaseIsWrittenInItsOwnValuesWithoutTheCavity) {
  test::ScratchDir dir("predict_2024");
  const std::string ck = save_tiny(dir.path(), "student", 5), id = "BraTS-GLI-02000-100";
  test::write_case(dir.str("in2024"), id, Layout::brats2023, phantom());
  test::write_case(dir.str("in2021"), id, Layout::brats2021, phantom());
  const std::string seg = dir.str("in2024/" + id + "/" + id + "-seg.nii.gz");
  LabelMap with_rc = read_labels(seg);
  for (size_t i = 0; i < 300; ++i)
    if (with_rc.data[i] == 0) with_rc.data[i] = 4;
  write_labels(seg, with_rc);
  std::vector<LabelMap> got;
  for (const char* in : {"in2024", "in2021"}) {
    PredictOptions o;
    o.models = {ck};
    o.in = dir.str(in);
    o.out = dir.str(std::string("out_") + in);
    o.inference = quick();
    o.threshold = 0.45;
    o.quiet = true;
    const auto r = predict_folder(o);
    ASSERT_TRUE(r.failures.empty()) << r.failures[0];
    got.push_back(read_labels(o.out + "/" + id + ".nii.gz"));
  }
  std::array<int64_t, 256> count{};
  for (uint8_t v : got[0].data) ++count[v];
  EXPECT_GT(count[0], 0);
  EXPECT_EQ(count[4], 0) << "a prediction never holds the resection cavity";
  for (int v = 5; v < 256; ++v) EXPECT_EQ(count[v], 0) << v;
  labels_to_convention(got[1], Layout::brats2023);  // the 2021 folder's labels in 2023 values
  EXPECT_EQ(got[0].data, got[1].data);
}

TEST(Predict, TheSameCaseInEveryLayoutGivesTheSameLabels) {
  test::ScratchDir dir("predict_layouts");
  const std::string ck = save_tiny(dir.path(), "student", 5);
  std::vector<LabelMap> got;
  for (Layout l : {Layout::brats2021, Layout::brats2023, Layout::msd, Layout::nnunet}) {
    const std::string in = dir.str(std::string("in_") + layout_name(l)),
                      out = dir.str(std::string("out_") + layout_name(l));
    test::write_case(in, "C1", l, phantom(), /*with_seg=*/false);
    PredictOptions o;
    o.models = {ck};
    o.in = in;
    o.out = out;
    o.inference = quick();
    o.threshold = 0.45;  // an untrained net: make sure several labels occur
    o.quiet = true;
    ASSERT_TRUE(predict_folder(o).failures.empty());
    got.push_back(load_label_map(out + "/C1.nii.gz", l));  // back to internal labels
  }
  // One case from four explicit files, any names: the same labels, in BraTS 2021 values.
  const std::string case_dir = dir.str("in_brats2021/C1");
  PredictOptions o;
  o.models = {ck};
  o.files = {case_dir + "/C1_t1.nii.gz", case_dir + "/C1_t1ce.nii.gz", case_dir + "/C1_t2.nii.gz",
             case_dir + "/C1_flair.nii.gz"};
  o.out = dir.str("single/seg.nii.gz");
  o.inference = quick();
  o.threshold = 0.45;
  o.quiet = true;
  ASSERT_TRUE(predict_files(o).failures.empty());
  got.push_back(load_label_map(o.out, Layout::brats2021));
  EXPECT_EQ(predict_files(o).written.size(), 1u);  // an explicit file is always rewritten
  o.out = dir.str("single/seg.txt");
  EXPECT_THROW(predict_files(o), Error);

  int64_t n_tumour = 0, n_et = 0;
  for (uint8_t v : got[0].data) n_tumour += v != 0, n_et += v == 4;
  EXPECT_GT(n_tumour, 0);
  EXPECT_GT(n_et, 0);  // so that the layouts' ET values (4, 3, 3, 3) are all exercised
  for (size_t k = 1; k < got.size(); ++k) EXPECT_EQ(got[0].data, got[k].data) << k;
}

std::string slurp(const fs::path& p) {
  const auto b = read_file(p.string());
  return std::string(b.begin(), b.end());
}

TEST(PseudoLabel, ShardedEqualsUnshardedAndTrainingReadsTheDataset) {
  test::ScratchDir dir("pseudo_shards");
  for (int i = 0; i < 3; ++i)
    test::write_case(dir.str("unlabeled"), "U" + std::to_string(i), Layout::brats2021,
                     phantom(5 + i), false);
  PseudoLabelOptions o;
  o.predict.models = {save_tiny(dir.path(), "student", 1), save_tiny(dir.path(), "unet", 2)};
  o.predict.in = dir.str("unlabeled");
  o.predict.inference = quick();
  o.predict.quiet = true;
  o.target = "soft";
  o.ignore_band = 0.05;
  o.soft_with_ignore = true;  // both files, to check that shards write them alike
  o.predict.out = dir.str("whole");
  PseudoLabelReport whole = pseudo_label(o);
  EXPECT_EQ(whole.n_cases, 3);
  o.predict.out = dir.str("sharded");
  o.n_shards = 2;
  o.shard = 1;
  EXPECT_EQ(pseudo_label(o).predict.written, std::vector<std::string>{"U1"});
  o.shard = 0;
  EXPECT_EQ(pseudo_label(o).predict.written, (std::vector<std::string>{"U0", "U2"}));
  EXPECT_EQ(slurp(dir.path() / "whole/dataset.json"), slurp(dir.path() / "sharded/dataset.json"));
  for (const char* f : {"U0/U0_seg.nii.gz", "U1/U1_soft.nii.gz", "U2/U2_ignore.nii.gz",
                        "U2/U2_t1.nii.gz", "U1/pseudo.json"})
    EXPECT_EQ(slurp(dir.path() / "whole" / f), slurp(dir.path() / "sharded" / f)) << f;
  // A rerun finds everything done
  EXPECT_EQ(pseudo_label(o).predict.skipped.size(), 2u);
  // What training reads from it
  DataFolder f = open_data_folder({dir.str("whole"), 0.5});
  EXPECT_TRUE(f.pseudo);
  EXPECT_EQ(f.target, "soft");
  ASSERT_EQ(f.cases.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_FALSE(f.cases[i].soft.empty());
    EXPECT_FALSE(f.cases[i].ignore.empty());
    EXPECT_GE(f.confidence[i], 0.0);
    EXPECT_LE(f.confidence[i], 1.0);
  }
  EXPECT_EQ(parse_shard("3/4"), (std::pair<int, int>{3, 4}));
  for (const char* bad : {"4/4", "-1/2", "1", "a/b", "1/0", "1/2x"})
    EXPECT_THROW(parse_shard(bad), std::exception) << bad;
}

TEST(PseudoLabel, ConfidenceIsHighForSureAndLowForUnsureProbabilities) {
  at::Tensor sure = at::zeros({3, 8, 8, 8});
  sure.slice(1, 2, 6).fill_(0.999);
  at::Tensor unsure = at::full({3, 8, 8, 8}, 0.5);
  EXPECT_GT(case_confidence(sure), 0.95);
  EXPECT_LT(case_confidence(unsure), 0.05);
  EXPECT_DOUBLE_EQ(case_confidence(at::zeros({3, 4, 4, 4})), 1.0);
  at::Tensor m = uncertain_mask(unsure, 0.5, 0.1);
  EXPECT_EQ(m.sum().item<int64_t>(), 512);
  EXPECT_EQ(uncertain_mask(sure, 0.5, 0.1).sum().item<int64_t>(), 0);
}

}  // namespace
}  // namespace kdseg
