// Dataset layouts: discovery, modality order, label conventions, and the bad cases.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "kdseg/io/dataset.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::phantom_labels;
using test::ScratchDir;
using test::write_case;
namespace fs = std::filesystem;

const std::array<int64_t, 3> kDim{16, 16, 12};

LabelMap tumour() {
  return phantom_labels(kDim, {8, 8, 6}, 5);
}

// Every internal label of the phantom comes back as it went in, whatever the layout.
void expect_internal_labels(const CaseData& c) {
  ASSERT_TRUE(c.labels.has_value());
  EXPECT_EQ(c.labels->data, tumour().data);
  // Modalities in internal order: intensity 100*(m+1) + ...
  for (int m = 0; m < 4; ++m) EXPECT_NEAR(c.image.channel(m)[0], 100.f * (m + 1), 7) << m;
}

TEST(Dataset, Brats2021Layout) {
  ScratchDir dir("ds2021");
  write_case(dir.str(), "BraTS2021_00001", Layout::brats2021, tumour());
  write_case(dir.str(), "BraTS2021_00000", Layout::brats2021, tumour(), /*with_seg=*/false);
  Dataset ds = discover_dataset(dir.str());
  EXPECT_EQ(ds.layout, Layout::brats2021);
  ASSERT_EQ(ds.cases.size(), 2u);
  EXPECT_EQ(ds.cases[0].id, "BraTS2021_00000");
  EXPECT_TRUE(ds.cases[0].seg.empty());  // unlabelled cases are first-class
  EXPECT_TRUE(ds.problems.empty());
  CaseData c = load_case(ds.cases[1], ds.layout);
  EXPECT_EQ(c.image.n_channels, 4);
  expect_internal_labels(c);
  CaseData u = load_case(ds.cases[0], ds.layout);
  EXPECT_FALSE(u.labels.has_value());
}

TEST(Dataset, ParallelReadingGivesTheSameCaseWithT1sGeometry) {
  // Each modality is converted straight into its channel as soon as it is read, in whatever order
  // the threads finish: the same image as reading one file after another, and T1's geometry.
  ScratchDir dir("dspar");
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  Volume t2 = read_volume((dir.path() / "A" / "A_t2.nii.gz").string());
  t2.source.srow[0][3] += 0.004;  // within the 0.01 mm tolerance: one grid, another header
  t2.source.qoffset_x += 0.004;
  write_volume((dir.path() / "A" / "A_t2.nii.gz").string(), t2);
  Dataset ds = discover_dataset(dir.str());
  const CaseData one = load_case(ds.cases[0], ds.layout, 1);
  const double t1_srow = read_volume(ds.cases[0].image[0]).source.srow[0][3];
  for (int threads : {2, 5}) {
    const CaseData many = load_case(ds.cases[0], ds.layout, threads);
    EXPECT_EQ(many.image.data, one.image.data) << threads;
    EXPECT_EQ(many.image.source.srow[0][3], t1_srow) << threads;
    EXPECT_EQ(many.image.dim, one.image.dim);
    expect_internal_labels(many);
  }
  EXPECT_EQ(one.image.source.srow[0][3], t1_srow);
}

TEST(Dataset, Brats2023LayoutMapsEtFrom3) {
  ScratchDir dir("ds2023");
  write_case(dir.str(), "BraTS-GLI-00000-000", Layout::brats2023, tumour());
  Dataset ds = discover_dataset(dir.str());
  EXPECT_EQ(ds.layout, Layout::brats2023);
  LabelMap raw = read_labels(ds.cases[0].seg);
  EXPECT_GT(std::count(raw.data.begin(), raw.data.end(), 3), 0);
  EXPECT_EQ(std::count(raw.data.begin(), raw.data.end(), 4), 0);
  expect_internal_labels(load_case(ds.cases[0], ds.layout));
}

// A BraTS 2024 post-treatment case: the 2023 names, and 4 = resection cavity (RC) in the seg.
// RC is not tumour: read as background, whether the convention is found (brats2023, the
// layout's) or named (brats2024).
TEST(Dataset, Brats2024ResectionCavityIsReadAsBackground) {
  ScratchDir dir("ds2024");
  const std::string id = "BraTS-GLI-02000-100";
  write_case(dir.str(), id, Layout::brats2023, tumour());
  Dataset ds = discover_dataset(dir.str());
  EXPECT_EQ(ds.layout, Layout::brats2023);
  EXPECT_EQ(ds.labels.resection_cavity, 4);
  // A cavity in a corner, away from the tumour.
  LabelMap seg = read_labels(ds.cases[0].seg);
  int64_t n_cavity = 0;
  for (int64_t i = 0; i < 40; ++i)
    if (seg.data[i] == 0) seg.data[i] = 4, ++n_cavity;
  ASSERT_GT(n_cavity, 0);
  write_labels(ds.cases[0].seg, seg);
  expect_internal_labels(load_case(ds.cases[0], ds.labels));
  expect_internal_labels(load_case(ds.cases[0], Layout::brats2024));
  int64_t n_read = -1;
  load_label_map(ds.cases[0].seg, ds.labels, &n_read);
  EXPECT_EQ(n_read, n_cavity);
  // Named brats2021, 4 is ET: the same file reads differently (and 3 is refused).
  EXPECT_THROW(load_label_map(ds.cases[0].seg, Layout::brats2021), Error);
}

TEST(Dataset, Brats2024WritesBackgroundAs0NeverAsTheCavity) {
  for (Layout l : {Layout::brats2023, Layout::brats2024}) {
    const auto from = label_lut_from_internal(l);
    EXPECT_EQ(from[0], 0) << layout_name(l);
    EXPECT_EQ(from[1], 1);
    EXPECT_EQ(from[2], 2);
    EXPECT_EQ(from[4], 3);
    EXPECT_EQ(allowed_labels(l), (std::vector<int>{0, 1, 2, 3, 4}));
  }
  LabelMap l = tumour();
  labels_to_convention(l, Layout::brats2024);
  for (size_t i = 0; i < l.data.size(); ++i)
    ASSERT_EQ(l.data[i], tumour().data[i] == 4 ? 3 : tumour().data[i]) << i;
  EXPECT_EQ(parse_layout("brats2024", "--labels"), Layout::brats2024);
  EXPECT_STREQ(layout_name(Layout::brats2024), "brats2024");
}

TEST(Dataset, MsdLayout4dAndLabels) {
  ScratchDir dir("dsmsd");
  write_case(dir.str(), "BRATS_001", Layout::msd, tumour());
  Dataset ds = discover_dataset(dir.str());
  EXPECT_EQ(ds.layout, Layout::msd);
  ASSERT_EQ(ds.cases.size(), 1u);
  EXPECT_EQ(ds.cases[0].frame[3], 0);  // FLAIR is frame 0 in Task01
  expect_internal_labels(load_case(ds.cases[0], ds.layout));
}

TEST(Dataset, SingleCaseFolder) {
  ScratchDir dir("dssingle");
  write_case(dir.str(), "CASE_7", Layout::brats2021, tumour());
  Dataset ds = discover_dataset(dir.str("CASE_7"));
  ASSERT_EQ(ds.cases.size(), 1u);
  EXPECT_EQ(ds.cases[0].id, "CASE_7");
}

TEST(Dataset, LabelConventionsRoundTrip) {
  for (Layout l :
       {Layout::brats2021, Layout::brats2023, Layout::brats2024, Layout::msd, Layout::nnunet}) {
    auto to = label_lut_to_internal(l), from = label_lut_from_internal(l);
    for (int internal : {0, 1, 2, 4}) EXPECT_EQ(to[from[internal]], internal) << layout_name(l);
    EXPECT_EQ(from[3], kInvalidLabel);
  }
  EXPECT_EQ(label_lut_to_internal(Layout::msd)[1], 2);  // MSD 1 = oedema
  EXPECT_EQ(label_lut_to_internal(Layout::msd)[2], 1);  // MSD 2 = non-enhancing core
}

TEST(Dataset, EmptyFolderIsAnError) {
  ScratchDir dir("dsempty");
  EXPECT_THROW(discover_dataset(dir.str()), Error);
  EXPECT_THROW(discover_dataset(dir.str("missing")), Error);
}

TEST(Dataset, MixedLayoutsAreAnError) {
  ScratchDir dir("dsmixed");
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  write_case(dir.str(), "B", Layout::brats2023, tumour());
  try {
    discover_dataset(dir.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixes"), std::string::npos);
  }
}

TEST(Dataset, MissingModalityIsReportedAndRefused) {
  ScratchDir dir("dsmissing");
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  fs::remove(dir.path() / "A" / "A_t1ce.nii.gz");
  Dataset ds = discover_dataset(dir.str());
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_NE(ds.problems[0].find("missing modality t1ce"), std::string::npos);
  EXPECT_THROW(load_case(ds.cases[0], ds.layout), Error);
}

TEST(Dataset, ModalitiesOfDifferentShapeAreRefused) {
  ScratchDir dir("dsshape");
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  Volume small = test::make_image<float>({8, 8, 8}, {1, 1, 1}, 1.f);
  write_volume((dir.path() / "A" / "A_t2.nii.gz").string(), small);
  Dataset ds = discover_dataset(dir.str());
  try {
    load_case(ds.cases[0], ds.layout);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("A_t2.nii.gz"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("shape 8x8x8"), std::string::npos);
  }
}

TEST(Dataset, ModalitiesOfDifferentGeometryAreRefused) {
  ScratchDir dir("dsgeom");
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  Volume shifted = read_volume((dir.path() / "A" / "A_flair.nii.gz").string());
  shifted.source.srow[0][3] += 5.0;  // moved 5 mm
  shifted.source.qoffset_x += 5.0;
  write_volume((dir.path() / "A" / "A_flair.nii.gz").string(), shifted);
  Dataset ds = discover_dataset(dir.str());
  try {
    load_case(ds.cases[0], ds.layout);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("A_flair.nii.gz"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("geometry"), std::string::npos);
  }
}

TEST(Dataset, LabelsOutsideTheConventionAreRefused) {
  ScratchDir dir("dslabels");
  LabelMap bad = tumour();
  bad.data[0] = 3;  // no label 3 in BraTS 2018-2021
  write_case(dir.str(), "A", Layout::brats2021, tumour());
  write_labels((dir.path() / "A" / "A_seg.nii.gz").string(), bad);
  Dataset ds = discover_dataset(dir.str());
  try {
    load_case(ds.cases[0], ds.layout);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("A_seg.nii.gz"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3 (1 voxels)"), std::string::npos);
  }
}

TEST(Dataset, PredictionFolders) {
  ScratchDir dir("dspred");
  LabelMap l = tumour();
  write_labels(dir.str("flat/A.nii.gz"), l);
  write_labels(dir.str("flat/A_prob.nii.gz"), l);  // probability maps beside are skipped
  write_labels(dir.str("folders/B/B_seg.nii.gz"), l);
  auto flat = discover_label_maps(dir.str("flat"));
  ASSERT_EQ(flat.size(), 1u);
  EXPECT_EQ(flat[0].first, "A");
  auto folders = discover_label_maps(dir.str("folders"));
  ASSERT_EQ(folders.size(), 1u);
  EXPECT_EQ(folders[0].first, "B");
}

// nnU-Net raw datasets: the channel order and the label values come from dataset.json.
void write_json(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Dataset, NnunetLayoutTakesChannelsAndRegionLabelsFromDatasetJson) {
  ScratchDir dir("dsnnunet");
  write_case(dir.str(), "BraTS2021_00001", Layout::nnunet, tumour());
  write_case(dir.str(), "BraTS2021_00009", Layout::nnunet, tumour(), /*with_seg=*/false);
  Dataset ds = discover_dataset(dir.str());
  EXPECT_EQ(ds.layout, Layout::nnunet);
  EXPECT_EQ(ds.labels.name, "nnunet(1=ED,2=NCR,3=ET)");
  EXPECT_TRUE(ds.problems.empty()) << ds.problems[0];
  ASSERT_EQ(ds.cases.size(), 2u);
  EXPECT_EQ(ds.cases[0].id, "BraTS2021_00001");
  // FLAIR is channel 0 in kNnunetDatasetJson: internal modality 3 reads <ID>_0000.
  EXPECT_NE(ds.cases[0].image[3].find("BraTS2021_00001_0000.nii.gz"), std::string::npos);
  EXPECT_NE(ds.cases[0].seg.find("labelsTr"), std::string::npos);
  EXPECT_TRUE(ds.cases[1].seg.empty());  // imagesTs: unlabelled
  expect_internal_labels(load_case(ds.cases[0], ds.labels));
  // Written back in the dataset's values: ET is 3 there.
  LabelMap back = tumour();
  labels_to_convention(back, ds.labels);
  EXPECT_EQ(read_labels(ds.cases[0].seg).data, back.data);
}

TEST(Dataset, NnunetLabelsByNameIncludingVersion1AndBrats2023Names) {
  ScratchDir dir("dsnnnames");
  // BraTS 2023 names, v2 style: 1 NETC, 2 SNFH, 3 ET.
  write_json(dir.path() / "a.json", R"({"channel_names": {"0": "t1n", "1": "t1c", "2": "t2w",
    "3": "t2f"}, "labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}})");
  NnunetMeta a = nnunet_dataset_json(dir.str("a.json"));
  EXPECT_EQ(a.channel, (std::array<int, 4>{0, 1, 2, 3}));
  EXPECT_EQ(a.labels.to_internal[1], 1);
  EXPECT_EQ(a.labels.to_internal[2], 2);
  EXPECT_EQ(a.labels.to_internal[3], 4);
  EXPECT_EQ(a.labels.to_internal[4], kInvalidLabel);
  // MSD / nnU-Net v1 style: "modality" and value -> name.
  write_json(dir.path() / "b.json", R"({"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd",
    "3": "T2w"}, "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
    "3": "enhancing tumour"}})");
  NnunetMeta b = nnunet_dataset_json(dir.str("b.json"));
  EXPECT_EQ(b.channel, (std::array<int, 4>{1, 2, 3, 0}));
  EXPECT_EQ(b.labels.to_internal, LabelConvention(Layout::msd).to_internal);
  // A fifth channel that is none of the four is not read.
  write_json(dir.path() / "c.json", R"({"channel_names": {"0": "T1", "1": "T1ce", "2": "T2",
    "3": "FLAIR", "4": "brain mask"}, "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 4}})");
  EXPECT_EQ(nnunet_dataset_json(dir.str("c.json")).labels.to_internal,
            LabelConvention(Layout::brats2021).to_internal);
  // BraTS 2024 names with the resection cavity: read as background, shown in the name.
  write_json(dir.path() / "d.json", R"({"channel_names": {"0": "t1n", "1": "t1c", "2": "t2w",
    "3": "t2f"}, "labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}})");
  NnunetMeta d = nnunet_dataset_json(dir.str("d.json"));
  EXPECT_EQ(d.labels.to_internal, LabelConvention(Layout::brats2024).to_internal);
  EXPECT_EQ(d.labels.resection_cavity, 4);
  EXPECT_EQ(d.labels.name, "nnunet(1=NCR,2=ED,3=ET,4=RC)");
  EXPECT_EQ(label_lut_from_internal(d.labels)[0], 0);
}

TEST(Dataset, NnunetDatasetJsonThatCannotBeMappedIsRefusedNamingTheFile) {
  ScratchDir dir("dsnnbad");
  const std::string labels = R"("labels": {"background": 0, "ED": 1, "NCR": 2, "ET": 3})";
  write_json(
      dir.path() / "dwi.json",
      R"({"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR", "3": "DWI"}, )" + labels + "}");
  std::string e = error_of([&] { nnunet_dataset_json(dir.str("dwi.json")); });
  EXPECT_NE(e.find("dwi.json"), std::string::npos) << e;
  EXPECT_NE(e.find("no t1ce"), std::string::npos) << e;
  write_json(dir.path() / "tumour.json",
             R"({"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
                 "labels": {"background": 0, "tumour": 1}})");
  e = error_of([&] { nnunet_dataset_json(dir.str("tumour.json")); });
  EXPECT_NE(e.find("cannot map the label \"tumour\""), std::string::npos) << e;
  write_json(dir.path() / "regions.json",
             R"({"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
                 "labels": {"background": 0, "whole tumor": [1, 2], "tumor core": [2, 3],
                            "enhancing tumor": [3]}})");
  e = error_of([&] { nnunet_dataset_json(dir.str("regions.json")); });
  EXPECT_NE(e.find("not nested"), std::string::npos) << e;
  // The dataset folder: per-channel files without dataset.json are refused, not guessed.
  write_case(dir.str("ds"), "A", Layout::nnunet, tumour());
  fs::remove(dir.path() / "ds" / "dataset.json");
  e = error_of([&] { discover_dataset(dir.str("ds")); });
  EXPECT_NE(e.find("no dataset.json"), std::string::npos) << e;
  // A missing channel file is a problem of the case.
  write_case(dir.str("ds2"), "A", Layout::nnunet, tumour());
  fs::remove(dir.path() / "ds2" / "imagesTr" / "A_0002.nii.gz");
  Dataset ds = discover_dataset(dir.str("ds2"));
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_NE(ds.problems[0].find("A_0002.nii.gz: missing modality t1ce"), std::string::npos)
      << ds.problems[0];
}

}  // namespace
}  // namespace kdseg
