// The method as a user runs it, on the shared synthetic cohort (CTest fixture "cohort"): two
// tiny teachers, their ensemble on the test cases, pseudo-labels of the unlabelled cases, and a
// student trained on labelled + pseudo-labelled data with each target type.
#include <gtest/gtest.h>

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

  // Pseudo-labels, hard and soft (with an ignore mask)
  for (const std::string target : {"hard", "soft"}) {
    r = run_kdseg("pseudo-label" + models + " --in " + kCohort + "/unlabeled --out " +
                  dir.str("pseudo_" + target) + " --target " + target +
                  (target == "soft" ? " --ignore-band 0.2" : "") +
                  " --tta none --window whole --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    nlohmann::json ds =
        nlohmann::json::parse(std::ifstream(dir.str("pseudo_" + target + "/dataset.json")));
    EXPECT_EQ(ds["kind"], "pseudo");
    EXPECT_EQ(ds["target"], target);
    EXPECT_EQ(ds["teachers"].size(), 2u);
    ASSERT_EQ(ds["cases"].size(), discover_dataset(kCohort + "/unlabeled").cases.size());
    for (auto& [id, e] : ds["cases"].items()) {
      EXPECT_TRUE(fs::exists(dir.path() / ("pseudo_" + target) / id / (id + "_seg.nii.gz")));
      EXPECT_EQ(e.contains("soft"), target == "soft");
      EXPECT_EQ(e.contains("ignore"), target == "soft");
    }
    // The student learns from labelled + pseudo-labelled data
    r = run_kdseg("train --model student " + kStudent + " --out " + dir.str("student_" + target) +
                  common + " --data " + dir.str("pseudo_" + target) + ":1" +
                  (target == "soft" ? " --soft-temperature 1.5" : ""));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    expect_learning(dir.path() / ("student_" + target));
    // Pseudo-labelled cases are never validated on (the shared split stays the teachers')
    nlohmann::json sp = nlohmann::json::parse(std::ifstream(dir.str("splits.json")));
    for (auto& [id, e] : ds["cases"].items()) {
      const auto& val = sp["validation"];
      EXPECT_EQ(std::find(val.begin(), val.end(), id), val.end()) << id;
    }
  }
  // The pseudo-labelled folder is refused as labelled data when its labels are missing
  r = run_kdseg("train --model student --data " + kCohort + "/unlabeled --out " + dir.str("wrong") +
                " --steps 2 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no label map"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg
