// The synthetic cohort as a whole: determinism, label consistency, and the properties that make
// it a fair segmentation task (no single modality suffices; the contrasts that define each label).
// Runs at 3 mm so the whole group takes seconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/synth/case_generator.h"
#include "kdseg/synth/cohort.h"
#include "kdseg/synth/mr_signal.h"
#include "kdseg/synth/rng.h"
#include "support/test_support.h"

using namespace kdseg;
using namespace kdseg::synth;
namespace fs = std::filesystem;

namespace {

bool have_templates() {
  return fs::exists(std::string(kDefaultTemplateDir) + "/ch2bet.nii.gz") &&
         fs::exists(std::string(kDefaultTemplateDir) + "/ch2better.nii.gz");
}

class SynthCohort : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!have_templates()) return;
    template_ = std::make_unique<TissueTemplate>(load_colin27());
    anatomy_ = std::make_unique<CohortAnatomy>(prepare_anatomy(*template_, 3));
    for (int i = 0; i < 6; ++i)
      cases_.push_back(
          generate_case(*anatomy_, {case_id("test", i), "test", i, case_seed(99, 2, i)}));
  }
  static void TearDownTestSuite() {
    cases_.clear();
    anatomy_.reset();
    template_.reset();
  }
  void SetUp() override {
    if (!have_templates())
      GTEST_SKIP() << "Colin27 templates missing: apt-get install mricron-data";
  }
  static std::unique_ptr<TissueTemplate> template_;
  static std::unique_ptr<CohortAnatomy> anatomy_;
  static std::vector<SynthCase> cases_;
};
std::unique_ptr<TissueTemplate> SynthCohort::template_;
std::unique_ptr<CohortAnatomy> SynthCohort::anatomy_;
std::vector<SynthCase> SynthCohort::cases_;

bool in_region(uint8_t label, int region) {  // 0 WT, 1 TC, 2 ET
  if (region == 0) return label == 1 || label == 2 || label == 4;
  if (region == 1) return label == 1 || label == 4;
  return label == 4;
}

// z-score of each brain (non-zero) voxel of one modality, as kdseg's preprocessing does.
std::vector<float> zscore(const Volume& v) {
  double s = 0, s2 = 0, n = 0;
  for (float x : v.data)
    if (x != 0) {
      s += x;
      s2 += double(x) * x;
      n += 1;
    }
  const double mean = s / n, sd = std::sqrt(std::max(1e-12, s2 / n - mean * mean));
  std::vector<float> z(v.data.size(), 0.f);
  for (size_t i = 0; i < z.size(); ++i)
    if (v.data[i] != 0) z[i] = static_cast<float>((v.data[i] - mean) / sd);
  return z;
}

// Best mean Dice over cases of "z > t" or "z < t" for one modality and region, one threshold for
// all cases; cases where the region is empty are left out.
double best_single_threshold_dice(const std::vector<SynthCase>& cases, int m, int region) {
  const int nb = 400;
  const float lo = -6.f, step = 0.04f;
  std::vector<std::vector<double>> pos, neg;
  for (const auto& c : cases) {
    const std::vector<float> z = zscore(c.image[static_cast<size_t>(m)]);
    std::vector<double> p(nb, 0), q(nb, 0);
    double total = 0;
    for (size_t i = 0; i < z.size(); ++i) {
      if (c.image[0].data[i] == 0) continue;
      const int b = std::clamp(static_cast<int>((z[i] - lo) / step), 0, nb - 1);
      if (in_region(c.labels.data[i], region)) {
        p[static_cast<size_t>(b)] += 1;
        total += 1;
      } else {
        q[static_cast<size_t>(b)] += 1;
      }
    }
    if (total == 0) continue;
    pos.push_back(p);
    neg.push_back(q);
  }
  double best = 0;
  for (int dir = 0; dir < 2; ++dir)
    for (int t = 0; t <= nb; ++t) {
      double mean = 0;
      for (size_t c = 0; c < pos.size(); ++c) {
        double tp = 0, fp = 0, ref = 0;
        for (int b = 0; b < nb; ++b) {
          const bool pred = dir == 0 ? b >= t : b < t;
          ref += pos[c][static_cast<size_t>(b)];
          if (pred) {
            tp += pos[c][static_cast<size_t>(b)];
            fp += neg[c][static_cast<size_t>(b)];
          }
        }
        mean += 2 * tp / (ref + tp + fp) / pos.size();
      }
      best = std::max(best, mean);
    }
  return best;
}

}  // namespace

TEST_F(SynthCohort, SameSpecSameVoxelsOtherSeedDiffers) {
  const CaseSpec spec{case_id("test", 0), "test", 0, case_seed(99, 2, 0)};
  const SynthCase again = generate_case(*anatomy_, spec);
  for (int m = 0; m < 4; ++m) EXPECT_EQ(again.image[m].data, cases_[0].image[m].data);
  EXPECT_EQ(again.labels.data, cases_[0].labels.data);
  EXPECT_EQ(again.params.dump(), cases_[0].params.dump());
  EXPECT_NE(cases_[1].image[0].data, cases_[0].image[0].data);
}

TEST_F(SynthCohort, LabelsAreConsistentAndInsideTheBrain) {
  for (const auto& c : cases_) {
    ASSERT_EQ(c.labels.dim, (std::array<int64_t, 3>{80, 80, 52}));
    int64_t wt = 0;
    for (size_t i = 0; i < c.labels.data.size(); ++i) {
      const uint8_t l = c.labels.data[i];
      ASSERT_TRUE(l == 0 || l == 1 || l == 2 || l == 4) << c.id << " label " << int(l);
      if (l != 0) {
        ++wt;
        for (int m = 0; m < 4; ++m)
          ASSERT_GT(c.image[m].data[i], 0.f) << c.id << ": tumour outside the brain";
      }
      const bool brain = c.image[0].data[i] != 0;
      for (int m = 1; m < 4; ++m)
        ASSERT_EQ(c.image[m].data[i] != 0, brain) << "modalities disagree on the brain";
    }
    EXPECT_GT(wt, 0) << c.id << " has no tumour";
    // ET inside TC inside WT holds by construction of the labels; check the volumes agree.
    const auto& v = c.params["volumes_ml"];
    EXPECT_LE(v["et"].get<double>(), v["tc"].get<double>());
    EXPECT_LE(v["tc"].get<double>(), v["wt"].get<double>());
  }
}

TEST_F(SynthCohort, NoTwoBrainsAlike) {
  // Warps, scaling and flips: brain masks of two cases overlap clearly less than perfectly.
  for (size_t a = 0; a + 1 < cases_.size(); ++a) {
    const auto& x = cases_[a].image[0].data;
    const auto& y = cases_[a + 1].image[0].data;
    double inter = 0, nx = 0, ny = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      inter += (x[i] != 0) && (y[i] != 0);
      nx += x[i] != 0;
      ny += y[i] != 0;
    }
    EXPECT_LT(2 * inter / (nx + ny), 0.97) << cases_[a].id;
  }
}

TEST_F(SynthCohort, NoSingleModalityThresholdSegmentsAnyRegion) {
  const char* names[3] = {"WT", "TC", "ET"};
  const char* mods[4] = {"T1", "T1ce", "T2", "FLAIR"};
  for (int r = 0; r < 3; ++r) {
    double best = 0;
    int best_m = 0;
    for (int m = 0; m < 4; ++m) {
      const double d = best_single_threshold_dice(cases_, m, r);
      if (d > best) {
        best = d;
        best_m = m;
      }
    }
    std::cout << "  best single-threshold Dice " << names[r] << ": " << best << " (" << mods[best_m]
              << ")\n";
    EXPECT_LT(best, 0.6) << names[r] << " is segmented by one threshold on " << mods[best_m];
  }
}

TEST_F(SynthCohort, ContrastsThatDefineTheLabels) {
  // Per case means, then averaged over cases.
  double ed_wm_flair = 0, ed_wm_t2 = 0, et_around_t1ce = 0, et_wm_t1 = 0, nec_et_t1ce = 0;
  int n_ed = 0, n_et = 0, n_nec = 0;
  for (const auto& c : cases_) {
    const auto& d = c.labels.dim;
    auto mean = [&](int m, auto pred) {
      double s = 0, n = 0;
      for (size_t i = 0; i < c.labels.data.size(); ++i)
        if (pred(i)) {
          s += c.image[static_cast<size_t>(m)].data[i];
          n += 1;
        }
      return n > 0 ? s / n : NAN;
    };
    auto wm = [&](size_t i) { return c.labels.data[i] == 0 && c.tissue.data[i] == 3; };
    auto ed = [&](size_t i) { return c.labels.data[i] == 2; };
    auto et = [&](size_t i) { return c.labels.data[i] == 4; };
    auto nec = [&](size_t i) { return c.labels.data[i] == 1; };
    // Shell around ET: voxels within 2 voxels of ET that are not ET, inside the brain.
    std::vector<uint8_t> near(c.labels.data.size(), 0);
    for (int64_t z = 0; z < d[2]; ++z)
      for (int64_t y = 0; y < d[1]; ++y)
        for (int64_t x = 0; x < d[0]; ++x) {
          if (c.labels.at(x, y, z) != 4) continue;
          for (int64_t dz = -2; dz <= 2; ++dz)
            for (int64_t dy = -2; dy <= 2; ++dy)
              for (int64_t dx = -2; dx <= 2; ++dx) {
                const int64_t a = x + dx, b = y + dy, e = z + dz;
                if (a < 0 || b < 0 || e < 0 || a >= d[0] || b >= d[1] || e >= d[2]) continue;
                near[static_cast<size_t>((e * d[1] + b) * d[0] + a)] = 1;
              }
        }
    auto around = [&](size_t i) {
      return near[i] && c.labels.data[i] != 4 && c.image[0].data[i] != 0;
    };
    if (n_ed += 1, mean(kFlair, ed) == mean(kFlair, ed)) {
      ed_wm_flair += mean(kFlair, ed) / mean(kFlair, wm);
      ed_wm_t2 += mean(kT2, ed) / mean(kT2, wm);
    }
    const double et1ce = mean(kT1ce, et);
    if (et1ce == et1ce) {
      ++n_et;
      et_around_t1ce += et1ce / mean(kT1ce, around);
      et_wm_t1 += mean(kT1, et) / mean(kT1, wm);
      const double n1ce = mean(kT1ce, nec);
      if (n1ce == n1ce) {
        ++n_nec;
        nec_et_t1ce += n1ce / et1ce;
      }
    }
  }
  ASSERT_GT(n_et, 0);
  ASSERT_GT(n_nec, 0);
  ed_wm_flair /= n_ed;
  ed_wm_t2 /= n_ed;
  et_around_t1ce /= n_et;
  et_wm_t1 /= n_et;
  nec_et_t1ce /= n_nec;
  std::cout << "  oedema/WM FLAIR " << ed_wm_flair << ", T2 " << ed_wm_t2 << "; ET/around T1ce "
            << et_around_t1ce << "; ET/WM T1 " << et_wm_t1 << "; NCR/ET T1ce " << nec_et_t1ce
            << "\n";
  EXPECT_GT(ed_wm_flair, 1.15);
  EXPECT_GT(ed_wm_t2, 1.15);
  EXPECT_GT(et_around_t1ce, 1.1);
  EXPECT_LT(et_wm_t1, 1.0);
  EXPECT_LT(nec_et_t1ce, 0.9);
}

TEST_F(SynthCohort, WrittenCohortIsByteIdenticalAcrossThreadCountsAndReadsBack) {
  test::ScratchDir a("synth_a"), b("synth_b"), c("synth_c");
  SynthOptions o;
  o.n_labeled = 1;
  o.n_unlabeled = 1;
  o.n_test = 1;
  o.spacing_mm = 3;
  o.seed = 5;
  o.quiet = true;
  o.out = a.str();
  o.threads = 1;
  SynthReport ra = write_cohort(o, *template_);
  ASSERT_TRUE(ra.failures.empty());
  EXPECT_EQ(ra.n_written, 3);
  o.out = b.str();
  o.threads = 2;
  write_cohort(o, *template_);
  o.out = c.str();
  o.seed = 6;
  write_cohort(o, *template_);
  const std::vector<std::string> files = {"cohort.json",
                                          "labeled/SYN_L0001/SYN_L0001_t1.nii.gz",
                                          "labeled/SYN_L0001/SYN_L0001_seg.nii.gz",
                                          "labeled/SYN_L0001/SYN_L0001_flair.nii.gz",
                                          "unlabeled/SYN_U0001/SYN_U0001_t1ce.nii.gz",
                                          "hidden/SYN_U0001/SYN_U0001_seg.nii.gz",
                                          "test/SYN_T0001/SYN_T0001_t2.nii.gz",
                                          "test/SYN_T0001/SYN_T0001_seg.nii.gz"};
  for (const auto& f : files) {
    ASSERT_TRUE(fs::exists(a.path() / f)) << f;
    EXPECT_EQ(read_file((a.path() / f).string()), read_file((b.path() / f).string())) << f;
    EXPECT_NE(read_file((a.path() / f).string()), read_file((c.path() / f).string())) << f;
  }
  EXPECT_FALSE(fs::exists(a.path() / "unlabeled/SYN_U0001/SYN_U0001_seg.nii.gz"));
  // Read back: BraTS-style LPS file, canonical voxels equal to the generated ones.
  const SynthCase gen = generate_case(*anatomy_, {"SYN_T0001", "test", 0, case_seed(5, 2, 0)});
  const Volume t2 = read_volume((a.path() / "test/SYN_T0001/SYN_T0001_t2.nii.gz").string());
  EXPECT_EQ(t2.data, gen.image[kT2].data);
  EXPECT_FALSE(t2.to_canonical.identity());  // stored LPS like BraTS
  EXPECT_NEAR(t2.spacing[0], 3.0, 1e-6);
  const LabelMap seg = read_labels((a.path() / "test/SYN_T0001/SYN_T0001_seg.nii.gz").string());
  EXPECT_EQ(seg.data, gen.labels.data);
  const NiftiHeader h =
      read_nifti_header((a.path() / "test/SYN_T0001/SYN_T0001_t1.nii.gz").string());
  EXPECT_EQ(h.datatype, kNiftiInt16);
}

TEST(SynthTemplates, MissingTemplatesNameTheDebianPackage) {
  try {
    load_colin27("/nonexistent-kdseg-templates");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("mricron-data"), std::string::npos) << e.what();
  }
}
