// Preprocessing (z-score, crop, resampling), the preprocessing cache and splits.json.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "kdseg/data/cache.h"
#include "kdseg/data/folders.h"
#include "kdseg/data/preprocess.h"
#include "kdseg/data/splits.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {
namespace fs = std::filesystem;

// A case whose brain is an ellipsoid inside a 28x26x22 grid (background exactly 0), with a
// tumour phantom inside, four modalities of different scales.
CaseData brain_case(const std::string& id, bool tumour = true) {
  const std::array<int64_t, 3> dim{28, 26, 22};
  CaseData c;
  c.id = id;
  LabelMap labels = tumour ? test::phantom_labels(dim, {13, 12, 10}, 5)
                           : test::make_image<uint8_t>(dim, {1, 1, 1}, 0);
  c.image = test::make_image<float>(dim, {1, 1, 1}, 0.f, 4);
  for (int64_t z = 0; z < dim[2]; ++z)
    for (int64_t y = 0; y < dim[1]; ++y)
      for (int64_t x = 0; x < dim[0]; ++x) {
        const double dx = (x - 13.0) / 10, dy = (y - 12.0) / 9, dz = (z - 10.0) / 7;
        if (dx * dx + dy * dy + dz * dz > 1) {
          labels.at(x, y, z) = 0;
          continue;
        }
        for (int m = 0; m < 4; ++m)
          c.image.at(x, y, z, m) = 50.f * (m + 1) + 7.f * labels.at(x, y, z) +
                                   static_cast<float>((x * 7 + y * 3 + z * 5 + m) % 11);
      }
  c.labels = labels;
  return c;
}

PreprocessPlan as_is_plan() {
  PreprocessPlan p;
  p.spacing = {0, 0, 0};
  return p;
}

TEST(DataPreprocess, TensorAxesAreCanonicalXYZ) {
  CaseData c = brain_case("A");
  at::Tensor t = volume_to_tensor(c.image);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{4, 28, 26, 22}));
  EXPECT_EQ(t[2][13][11][9].item<float>(), c.image.at(13, 11, 9, 2));
  EXPECT_EQ(t[3][5][20][12].item<float>(), c.image.at(5, 20, 12, 3));
  LabelMap back = tensor_to_labels(labels_to_tensor(*c.labels), c.image);
  EXPECT_EQ(back.data, c.labels->data);
  Volume v = tensor_to_volume(t, c.image);
  EXPECT_EQ(v.data, c.image.data);
}

TEST(DataPreprocess, ZScoreIsMeanZeroStdOneOverBrainAndBackgroundStaysZero) {
  CaseData c = brain_case("A");
  PreparedCase p = preprocess_case(c, as_is_plan());
  at::Tensor raw = crop(volume_to_tensor(c.image), p.geometry.box);
  for (int64_t ch = 0; ch < 4; ++ch) {
    at::Tensor brain = raw[ch] != 0;
    at::Tensor v = p.image[ch].masked_select(brain).to(torch::kFloat64);
    EXPECT_NEAR(v.mean().item<double>(), 0.0, 1e-5) << "channel " << ch;
    EXPECT_NEAR((v - v.mean()).pow(2).mean().sqrt().item<double>(), 1.0, 1e-5) << "channel " << ch;
    EXPECT_EQ(p.image[ch].masked_select(brain.logical_not()).abs().max().item<float>(), 0.f);
  }
}

TEST(DataPreprocess, CropsToTheBrainBoxAndUncropRestoresTheGrid) {
  CaseData c = brain_case("A");
  at::Tensor full = volume_to_tensor(c.image);
  CropBox box = nonzero_bbox(full);
  // The ellipsoid centred at (13,12,10) with semi-axes (10,9,7).
  EXPECT_EQ(box.lo, (std::array<int64_t, 3>{3, 3, 3}));
  EXPECT_EQ(box.hi, (std::array<int64_t, 3>{24, 22, 18}));
  EXPECT_EQ(box.full, (std::array<int64_t, 3>{28, 26, 22}));
  EXPECT_TRUE(torch::equal(uncrop(crop(full, box), box), full));
  // Through the whole case: labels put back land where they were.
  PreparedCase p = preprocess_case(c, as_is_plan());
  EXPECT_EQ(p.geometry.shape, box.size());
  at::Tensor labels_back = uncrop(p.labels, p.geometry.box);
  EXPECT_TRUE(torch::equal(labels_back, labels_to_tensor(*c.labels)));
  // undo_geometry of a region map returns the source grid.
  at::Tensor regions = undo_geometry(labels_to_regions(p.labels), p.geometry);
  EXPECT_TRUE(torch::equal(regions, labels_to_regions(labels_to_tensor(*c.labels))));
}

TEST(DataPreprocess, ResamplesToAFixedShapeAndBack) {
  CaseData c = brain_case("A");
  PreprocessPlan plan = as_is_plan();
  plan.fixed_shape = {32, 32, 32};
  PreparedCase p = preprocess_case(c, plan);
  EXPECT_EQ(p.image.sizes(), (std::vector<int64_t>{4, 32, 32, 32}));
  EXPECT_EQ(p.labels.sizes(), (std::vector<int64_t>{32, 32, 32}));
  EXPECT_NEAR(p.geometry.spacing[0], 21.0 / 32, 1e-9);
  // Only valid labels, and the tumour volume in mm³ roughly kept.
  const at::Tensor& l = p.labels;
  EXPECT_TRUE(((l == 0) | (l == 1) | (l == 2) | (l == 4)).all().item<bool>());
  EXPECT_GT((l == 4).sum().item<int64_t>(), 0);
  const double vox = p.geometry.spacing[0] * p.geometry.spacing[1] * p.geometry.spacing[2];
  const double before = (labels_to_tensor(*c.labels) > 0).sum().item<double>();
  EXPECT_NEAR((p.labels > 0).sum().item<double>() * vox, before, 0.15 * before);
  at::Tensor back = undo_geometry(labels_to_regions(p.labels), p.geometry);
  EXPECT_EQ(back.sizes(), (std::vector<int64_t>{3, 28, 26, 22}));
  at::Tensor wt_ref = labels_to_tensor(*c.labels) > 0, wt = back[0] >= 0.5;
  const double dice = 2.0 * (wt_ref & wt).sum().item<double>() /
                      (wt_ref.sum().item<double>() + wt.sum().item<double>());
  EXPECT_GT(dice, 0.9);
}

TEST(DataPreprocess, ResamplesToATargetSpacing) {
  CaseData c = brain_case("A");
  PreprocessPlan plan;
  plan.spacing = {2.0, 2.0, 0};  // 0: keep that axis
  PreparedCase p = preprocess_case(c, plan);
  EXPECT_EQ(p.geometry.shape, (std::array<int64_t, 3>{11, 10, 15}));  // 21/2, 19/2 rounded; 15
  EXPECT_NEAR(p.geometry.spacing[2], 1.0, 1e-12);
}

TEST(DataPreprocess, RejectsAnEmptyCaseAndABadPlan) {
  CaseData c = brain_case("EMPTY");
  std::fill(c.image.data.begin(), c.image.data.end(), 0.f);
  EXPECT_THROW(preprocess_case(c, as_is_plan()), Error);
  PreprocessPlan bad = as_is_plan();
  bad.channels = {"t1", "t1ce", "t2", "dwi"};
  EXPECT_THROW(validate_plan(bad), Error);
  bad = as_is_plan();
  bad.fixed_shape = {128, 0, 128};
  EXPECT_THROW(validate_plan(bad), Error);
}

TEST(DataPreprocess, ChannelOrderFollowsThePlan) {
  CaseData c = brain_case("A");
  PreprocessPlan plan = as_is_plan();
  plan.normalization = "none";
  PreparedCase a = preprocess_case(c, plan);
  plan.channels = {"flair", "t2", "t1ce", "t1"};
  PreparedCase b = preprocess_case(c, plan);
  EXPECT_TRUE(torch::equal(a.image.flip({0}), b.image));
}

// ---------------------------------------------------------------- cache

std::string write_brats_case(const std::string& root, const std::string& id) {
  // write_case's images are non-zero everywhere; give it a background by zeroing a border.
  LabelMap l = test::phantom_labels({24, 24, 20}, {12, 12, 10}, 5);
  test::write_case(root, id, Layout::brats2021, l);
  return (fs::path(root) / id).string();
}

TEST(DataCache, HitsMissesAndInvalidatesOnMtimeAndPlanChange) {
  test::ScratchDir dir("data_cache");
  write_brats_case(dir.str("data"), "C1");
  Dataset ds = discover_dataset(dir.str("data"));
  ASSERT_EQ(ds.cases.size(), 1u);
  CaseInput in;
  in.files = ds.cases[0];
  PreprocessCache cache(dir.str("cache"), as_is_plan());
  bool built = false;
  auto a = cache.get(in, &built);
  EXPECT_TRUE(built);
  EXPECT_EQ(a->id(), "C1");
  EXPECT_TRUE(a->labelled());
  EXPECT_EQ(a->image().scalar_type(), at::kHalf);
  EXPECT_TRUE(fs::exists(fs::path(cache.plan_dir()) / "plan.json"));
  // The cached data is the preprocessed case (float16 rounding aside).
  PreparedCase ref = preprocess_case(load_case(in.files, Layout::brats2021), as_is_plan());
  EXPECT_TRUE(torch::allclose(a->image().to(torch::kFloat32), ref.image, 1e-3, 2e-3));
  EXPECT_TRUE(torch::equal(a->labels(), ref.labels));
  EXPECT_GT(a->tumour_points().size(0), 0);

  auto b = cache.get(in, &built);
  EXPECT_FALSE(built) << "second get must be a hit";
  EXPECT_EQ(b->path(), a->path());

  // A touched input (new mtime) is a miss.
  const std::string t1 = in.files.image[0];
  fs::last_write_time(t1, fs::last_write_time(t1) + std::chrono::seconds(5));
  auto c = cache.get(in, &built);
  EXPECT_TRUE(built) << "an input's mtime changed: the cache must rebuild";
  EXPECT_NE(c->path(), a->path());
  cache.get(in, &built);
  EXPECT_FALSE(built);

  // Another plan is another key; a plan differing only in patch/stride shares the cache.
  PreprocessPlan other = as_is_plan();
  other.fixed_shape = {16, 16, 16};
  PreprocessCache cache2(dir.str("cache"), other);
  EXPECT_NE(cache2.plan_key(), cache.plan_key());
  auto d = cache2.get(in, &built);
  EXPECT_TRUE(built);
  EXPECT_EQ(d->geometry().shape, (std::array<int64_t, 3>{16, 16, 16}));
  PreprocessPlan same = as_is_plan();
  same.patch = {64, 64, 64};
  same.stride = 16;
  EXPECT_EQ(PreprocessCache(dir.str("cache"), same).plan_key(), cache.plan_key());
}

TEST(DataCache, RebuildsACorruptFileAndRejectsBadFiles) {
  test::ScratchDir dir("data_cache_bad");
  write_brats_case(dir.str("data"), "C1");
  CaseInput in;
  in.files = discover_dataset(dir.str("data")).cases[0];
  PreprocessCache cache(dir.str("cache"), as_is_plan());
  const std::string path = cache.get(in)->path();
  fs::resize_file(path, 100);
  EXPECT_THROW(CachedCase::open(path), Error);
  bool built = false;
  auto c = cache.get(in, &built);
  EXPECT_TRUE(built);
  EXPECT_EQ(c->path(), path);
  std::ofstream(dir.str("junk.kdc")) << "not a cache file at all";
  EXPECT_THROW(CachedCase::open(dir.str("junk.kdc")), Error);
}

TEST(DataCache, RefusesALocationInsideTheData) {
  test::ScratchDir dir("data_cache_loc");
  EXPECT_THROW(check_cache_location(dir.str("data/cache"), {dir.str("data")}), Error);
  EXPECT_THROW(check_cache_location(dir.str("data"), {dir.str("data")}), Error);
  EXPECT_NO_THROW(check_cache_location(dir.str("cache"), {dir.str("data")}));
  EXPECT_NO_THROW(check_cache_location(dir.str("data2"), {dir.str("data")}));
  EXPECT_FALSE(default_cache_dir().empty());
}

// ---------------------------------------------------------------- splits

std::vector<std::string> ids(const char* prefix, int n) {
  std::vector<std::string> v;
  for (int i = 1; i <= n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

TEST(DataSplits, DeterministicFromTheSeedAndPseudoNeverValidated) {
  SplitOptions o;
  o.seed = 7;
  o.validation_fraction = 0.25;
  Splits a = make_splits(ids("L", 20), ids("P", 6), ids("T", 3), o);
  Splits b = make_splits(ids("L", 20), ids("P", 6), ids("T", 3), o);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_EQ(a.validation.size(), 5u);
  EXPECT_EQ(a.train.size(), 15u + 6u);
  EXPECT_EQ(a.test.size(), 3u);
  for (const auto& id : a.validation) EXPECT_EQ(id[0], 'L');
  o.seed = 8;
  Splits c = make_splits(ids("L", 20), ids("P", 6), {}, o);
  EXPECT_NE(a.validation, c.validation);
  // Input order does not matter.
  auto shuffled = ids("L", 20);
  std::reverse(shuffled.begin(), shuffled.end());
  o.seed = 7;
  EXPECT_EQ(make_splits(shuffled, ids("P", 6), {}, o).validation, a.validation);
  // Tiny cohorts still validate on one case and train on the rest.
  Splits tiny = make_splits(ids("L", 2), {}, {}, o);
  EXPECT_EQ(tiny.validation.size(), 1u);
  EXPECT_EQ(tiny.train.size(), 1u);
}

TEST(DataSplits, ReusedWhenPresentAndCheckedAgainstTheData) {
  test::ScratchDir dir("data_splits");
  const std::string path = dir.str("splits.json");
  SplitOptions o;
  bool made = false;
  Splits a = load_or_make_splits(path, ids("L", 10), {}, {}, o, &made);
  EXPECT_TRUE(made);
  o.seed = 99;  // ignored: the file wins
  Splits b = load_or_make_splits(path, ids("L", 10), ids("P", 3), {}, o, &made);
  EXPECT_FALSE(made);
  EXPECT_EQ(b.validation, a.validation);
  EXPECT_EQ(b.train.size(), a.train.size() + 3) << "pseudo cases join train";
  // Errors: a labelled case the file does not know; a pseudo case listed for validation; a
  // listed case missing from the data.
  EXPECT_THROW(load_or_make_splits(path, ids("L", 11), {}, {}, o), Error);
  Splits bad = a;
  bad.validation.push_back("P1");
  write_splits(path, bad);
  EXPECT_THROW(load_or_make_splits(path, ids("L", 10), {"P1"}, {}, o), Error);
  write_splits(path, a);
  EXPECT_THROW(load_or_make_splits(path, ids("L", 9), {}, {}, o), Error);
  EXPECT_EQ(read_splits(path).validation, a.validation);
}

// ---------------------------------------------------------------- folders

TEST(DataFolders, ParsesWeightsAndRejectsUnlabelledOrEmptyFolders) {
  auto s = parse_data_arg("cohort/labeled:0.5");
  EXPECT_EQ(s.dir, "cohort/labeled");
  EXPECT_DOUBLE_EQ(s.weight, 0.5);
  EXPECT_EQ(parse_data_arg("c:/x").dir, "c:/x");
  EXPECT_THROW(parse_data_arg("dir:-1"), Error);

  test::ScratchDir dir("data_folders");
  LabelMap l = test::phantom_labels({16, 16, 16}, {8, 8, 8}, 4);
  test::write_case(dir.str("unl"), "U1", Layout::brats2021, l, /*with_seg=*/false);
  try {
    open_data_folder({dir.str("unl"), 1});
    FAIL() << "an unlabelled folder must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no label map"), std::string::npos) << e.what();
  }
  fs::create_directories(dir.str("empty"));
  EXPECT_THROW(open_data_folder({dir.str("empty"), 1}), Error);
  // An nnU-Net dataset trains on imagesTr/ (with its own label values) and leaves out imagesTs/,
  // its test set, as nnU-Net does.
  test::write_case(dir.str("nnunet"), "A", Layout::nnunet, l);
  test::write_case(dir.str("nnunet"), "T", Layout::nnunet, l, /*with_seg=*/false);
  DataFolder nn = open_data_folder({dir.str("nnunet"), 1});
  ASSERT_EQ(nn.cases.size(), 1u);
  EXPECT_EQ(nn.cases[0].files.id, "A");
  EXPECT_EQ(nn.cases[0].convention.name, "nnunet(1=ED,2=NCR,3=ET)");
  fs::remove_all(dir.path() / "nnunet" / "imagesTr");
  EXPECT_THROW(open_data_folder({dir.str("nnunet"), 1}), Error);
  // A pseudo folder: dataset.json "kind": "pseudo", confidence filtering.
  test::write_case(dir.str("pseudo"), "P1", Layout::brats2021, l);
  test::write_case(dir.str("pseudo"), "P2", Layout::brats2021, l);
  std::ofstream(dir.str("pseudo/dataset.json"))
      << R"({"kind": "pseudo", "target": "hard", "cases": {"P1": {"confidence": 0.2},
             "P2": {"confidence": 0.9, "ignore": "P2/P2_seg.nii.gz"}}})";
  DataFolder f = open_data_folder({dir.str("pseudo"), 0.5});
  EXPECT_TRUE(f.pseudo);
  ASSERT_EQ(f.cases.size(), 2u);
  EXPECT_FALSE(f.cases[1].ignore.empty());
  drop_least_confident(f, 0.5, 0);
  ASSERT_EQ(f.cases.size(), 1u);
  EXPECT_EQ(f.cases[0].files.id, "P2");
}

TEST(DataFolders, PrepareTrainingDataSplitsPoolsAndChecksThePatch) {
  test::ScratchDir dir("data_prepare");
  LabelMap l = test::phantom_labels({16, 16, 16}, {8, 8, 8}, 4);
  for (const char* id : {"L1", "L2", "L3"})
    test::write_case(dir.str("lab"), id, Layout::brats2021, l);
  test::write_case(dir.str("pse"), "P1", Layout::brats2021, l);
  std::ofstream(dir.str("pse/dataset.json")) << R"({"kind": "pseudo", "cases": {}})";
  TrainingDataOptions o;
  o.data = {parse_data_arg(dir.str("lab")), parse_data_arg(dir.str("pse") + ":0.5")};
  o.cache_dir = dir.str("cache");
  o.splits_path = dir.str("exp/splits.json");
  o.split.validation_fraction = 0.34;
  PreprocessPlan plan = as_is_plan();
  TrainingData td = prepare_training_data(o, plan, {16, 16, 16});
  ASSERT_EQ(td.pools.size(), 2u);
  EXPECT_EQ(td.pools[0].cases.size(), 2u);
  EXPECT_EQ(td.pools[1].cases.size(), 1u);
  EXPECT_DOUBLE_EQ(td.pools[1].weight, 0.5);
  ASSERT_EQ(td.validation.size(), 1u);
  EXPECT_EQ(td.validation[0]->id()[0], 'L');
  EXPECT_EQ(td.n_built, 4);
  EXPECT_TRUE(fs::exists(o.splits_path));
  TrainingData again = prepare_training_data(o, plan, {16, 16, 16});
  EXPECT_EQ(again.n_built, 0);
  EXPECT_EQ(again.splits.validation, td.splits.validation);
  try {
    prepare_training_data(o, plan, {16, 16, 32});
    FAIL() << "patch larger than the volume must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("larger than the volume"), std::string::npos) << e.what();
  }
  o.cache_dir = dir.str("lab/cache");
  EXPECT_THROW(prepare_training_data(o, plan, {16, 16, 16}), Error);
}

}  // namespace
}  // namespace kdseg
