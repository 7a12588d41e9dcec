// The method as a user runs it, on the shared synthetic cohort (CTest fixture "cohort"): two
// tiny teachers, their ensemble on the test cases, pseudo-labels of the unlabelled cases, and a
// student trained on labelled + pseudo-labelled data with each target type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kdseg/io/dataset.h"
#include "kdseg/io/nifti.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

namespace fs = std::filesystem;
using test::run_kdseg;
using test::ScratchDir;

const std::string kCohort = KDSEG_TEST_COHORT;
const std::string kStudent = "--model-options '{\"widths\":[8,8,16,16],\"norm_groups\":4}'";

// The loss column of a run's log.csv.
std::vector<double> losses(const fs::path& run) {
  std::ifstream in((run / "log.csv").string());
  std::string line;
  std::getline(in, line);
  std::vector<double> v;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string cell;
    for (int i = 0; i < 3; ++i) std::getline(ss, cell, ',');
    v.push_back(std::stod(cell));
  }
  return v;
}

void expect_learning(const fs::path& run) {
  const auto l = losses(run);
  ASSERT_GE(l.size(), 8u) << run;
  for (double x : l) ASSERT_TRUE(std::isfinite(x)) << run;
  const double first = (l[0] + l[1] + l[2]) / 3,
               last = (l[l.size() - 1] + l[l.size() - 2] + l[l.size() - 3]) / 3;
  EXPECT_LT(last, first) << run << ": the loss did not fall";
}

TEST(Distillation, TeachersEnsemblePseudoLabelsAndStudentsWithEachTarget) {
  ScratchDir dir("e2e_distillation");
  const std::string common = " --data " + kCohort + "/labeled --cache " + dir.str("cache") +
                             " --steps 16 --batch 2 --patch 16,16,16 --lr 3e-3 --log-every 1 "
                             "--val-every 8 --threads 2 --workers 1 --quiet --splits " +
                             dir.str("splits.json");
  auto r = run_kdseg("train --model unet --model-options '{\"widths\":[4,8,16,32]}' --out " +
                     dir.str("unet") + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_kdseg("train --model student " + kStudent + " --out " + dir.str("student0") + common);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_learning(dir.path() / "unet");
  const std::string models = " --model " + dir.str("unet/checkpoints/last.pt") + " --model " +
                             dir.str("student0/checkpoints/best.pt");

  // The ensemble on the test cases: one label map per case on the input's grid
  r = run_kdseg("predict" + models + " --in " + kCohort + "/test --out " + dir.str("pred") +
                " --tta xy --window whole --save-probs --quiet --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& c : discover_dataset(kCohort + "/test").cases) {
    const LabelMap l = read_labels(dir.str("pred/" + c.id + ".nii.gz"));
    const Volume t1 = read_volume(c.image[0]);
    EXPECT_TRUE(same_grid(l, t1)) << c.id;
    EXPECT_TRUE(fs::exists(dir.path() / "pred" / (c.id + "_prob.nii.gz")));
  }
  r = run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + kCohort + "/test --out " +
                dir.str("eval") + " --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  // The ensemble averages its members: each member alone, same options, and the ensemble's
  // probabilities are their mean (to the 1/255 of the stored probabilities), unlike either one.
  for (const char* m : {"unet/checkpoints/last.pt", "student0/checkpoints/best.pt"}) {
    r = run_kdseg("predict --model " + dir.str(m) + " --in " + kCohort + "/test --out " +
                  dir.str(std::string("pred_") + m[0]) +
                  " --tta xy --window whole --save-probs --quiet --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  for (const auto& c : discover_dataset(kCohort + "/test").cases) {
    const std::string f = c.id + "_prob.nii.gz";
    const Volume e = read_volume(dir.str("pred/" + f)), a = read_volume(dir.str("pred_u/" + f)),
                 b = read_volume(dir.str("pred_s/" + f));
    ASSERT_EQ(e.data.size(), a.data.size());
    double worst = 0, differs_a = 0, differs_b = 0;
    for (size_t i = 0; i < e.data.size(); ++i) {
      worst = std::max(worst, std::abs(double(e.data[i]) - (double(a.data[i]) + b.data[i]) / 2));
      differs_a = std::max(differs_a, std::abs(double(e.data[i] - a.data[i])));
      differs_b = std::max(differs_b, std::abs(double(e.data[i] - b.data[i])));
    }
    EXPECT_LE(worst, 1.01 / 255) << c.id << ": the ensemble is not the mean of its members";
    EXPECT_GT(differs_a, 0.05) << c.id << ": the ensemble is the UNet alone";
    EXPECT_GT(differs_b, 0.05) << c.id << ": the ensemble is the student alone";
  }

  // Pseudo-labels: hard, soft, and hard with an ignore mask (soft with an ignore band is refused:
  // the mask would drop the loss where soft targets differ from hard ones).
  r = run_kdseg("pseudo-label" + models + " --in " + kCohort + "/unlabeled --out " +
                dir.str("pseudo_refused") + " --target soft --ignore-band 0.2 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--soft-with-ignore-band"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.path() / "pseudo_refused" / "dataset.json"));
  // The ensemble's probabilities on the unlabelled cases, to compare the soft targets with.
  r = run_kdseg("predict" + models + " --in " + kCohort + "/unlabeled --out " +
                dir.str("unlabeled_probs") + " --tta none --window whole --save-probs --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::pair<std::string, std::string>> kinds{
      {"hard", ""}, {"soft", ""}, {"hard_ignore", " --ignore-band 0.2"}};
  for (const auto& [name, band] : kinds) {
    const std::string target = name == "soft" ? "soft" : "hard";
    r = run_kdseg("pseudo-label" + models + " --in " + kCohort + "/unlabeled --out " +
                  dir.str("pseudo_" + name) + " --target " + target + band +
                  " --tta none --window whole --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    nlohmann::json ds =
        nlohmann::json::parse(std::ifstream(dir.str("pseudo_" + name + "/dataset.json")));
    EXPECT_EQ(ds["kind"], "pseudo");
    EXPECT_EQ(ds["target"], target);
    EXPECT_EQ(ds["teachers"].size(), 2u);
    ASSERT_EQ(ds["cases"].size(), discover_dataset(kCohort + "/unlabeled").cases.size());
    for (auto& [id, e] : ds["cases"].items()) {
      EXPECT_TRUE(fs::exists(dir.path() / ("pseudo_" + name) / id / (id + "_seg.nii.gz")));
      EXPECT_EQ(e.contains("soft"), target == "soft");
      EXPECT_EQ(e.contains("ignore"), !band.empty());
      if (target != "soft") continue;
      // Soft targets are the ensemble's probabilities, not thresholded ones.
      const Volume soft = read_volume(dir.str("pseudo_soft/" + id + "/" + id + "_soft.nii.gz")),
                   probs = read_volume(dir.str("unlabeled_probs/" + id + "_prob.nii.gz"));
      EXPECT_EQ(soft.data, probs.data) << id;
      int64_t between = 0;
      for (float v : soft.data) between += v > 0.02f && v < 0.98f;
      EXPECT_GT(between, 100) << id << ": the soft targets are (nearly) all 0 or 1";
    }
    // The student learns from labelled + pseudo-labelled data, half of its samples from each
    r = run_kdseg("train --model student " + kStudent + " --out " + dir.str("student_" + name) +
                  common + " --data " + dir.str("pseudo_" + name) + ":1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_learning(dir.path() / ("student_" + name));
    const nlohmann::json done =
        nlohmann::json::parse(std::ifstream(dir.str("student_" + name + "/done.json")));
    ASSERT_TRUE(done["data_folders"].contains(dir.str("pseudo_" + name)))
        << "the student drew nothing from the pseudo-labelled folder: " << done.dump();
    const int64_t from_pseudo =
        done["data_folders"][dir.str("pseudo_" + name)]["samples"].get<int64_t>();
    EXPECT_GE(from_pseudo, 8) << done.dump();  // of 32 samples, expected 16
    EXPECT_LE(from_pseudo, 24) << done.dump();
    // Pseudo-labelled cases are never validated on (the shared split stays the teachers')
    nlohmann::json sp = nlohmann::json::parse(std::ifstream(dir.str("splits.json")));
    for (auto& [id, e] : ds["cases"].items()) {
      const auto& val = sp["validation"];
      EXPECT_EQ(std::find(val.begin(), val.end(), id), val.end()) << id;
    }
  }
  // Same seed, same samples: the soft student's losses differ from the hard one's only because
  // its targets do (soft targets silently thresholded would give the same numbers).
  EXPECT_NE(losses(dir.path() / "student_soft"), losses(dir.path() / "student_hard"));
  // The ignore mask reaches the loss too.
  EXPECT_NE(losses(dir.path() / "student_hard_ignore"), losses(dir.path() / "student_hard"));
  // The pseudo-labelled folder is refused as labelled data when its labels are missing
  r = run_kdseg("train --model student --data " + kCohort + "/unlabeled --out " + dir.str("wrong") +
                " --steps 2 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no label map"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg
