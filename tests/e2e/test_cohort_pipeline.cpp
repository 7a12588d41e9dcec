// The foundation's commands on the shared synthetic cohort (CTest fixture "cohort"): the cohort
// is a valid BraTS dataset, `check` finds no problem, `evaluate` scores the hidden truth of the
// unlabelled cases, `montage` draws a case.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "kdseg/io/dataset.h"
#include "kdseg/io/nifti.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

namespace fs = std::filesystem;
using test::run_kdseg;
using test::ScratchDir;

const std::string kCohort = KDSEG_TEST_COHORT;

TEST(CohortPipeline, CohortIsAValidBratsDataset) {
  for (const char* split : {"labeled", "unlabeled", "test"}) {
    auto r = run_kdseg("check " + kCohort + "/" + split + " --quiet");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("brats2021 layout"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("no problems found"), std::string::npos) << r.output;
  }
  Dataset unl = discover_dataset(kCohort + "/unlabeled");
  for (const auto& c : unl.cases) EXPECT_TRUE(c.seg.empty()) << c.id;
  Dataset lab = discover_dataset(kCohort + "/labeled");
  ASSERT_EQ(lab.cases.size(), 3u);
  CaseData c = load_case(lab.cases[0], lab.layout, 2);
  ASSERT_TRUE(c.labels.has_value());
  EXPECT_EQ(c.image.n_channels, 4);
  // BraTS-like storage: LPS on disk, RAS inside; 3 mm voxels.
  EXPECT_EQ(axis_codes(affine(c.image.source)), "LPS");
  EXPECT_DOUBLE_EQ(c.image.spacing[0], 3.0);
}

TEST(CohortPipeline, EvaluateScoresHiddenTruthAgainstItselfPerfectly) {
  ScratchDir out("e2e_eval");
  auto r = run_kdseg("evaluate --pred " + kCohort + "/hidden --ref " + kCohort + "/hidden --out " +
                     out.str() + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json s = nlohmann::json::parse(std::ifstream(out.str("summary.json")));
  EXPECT_EQ(s["n_cases"], 2);
  for (const char* col : {"dice_et", "dice_wt", "dice_tc"})
    EXPECT_DOUBLE_EQ(s["columns"][col]["mean"].get<double>(), 1.0) << col;
}

TEST(CohortPipeline, EvaluateOneCaseAgainstAnotherIsPoor) {
  // Every test case's truth scored as if it were another case's prediction: a sanity floor.
  ScratchDir out("e2e_swap");
  Dataset test_set = discover_dataset(kCohort + "/test");
  ASSERT_EQ(test_set.cases.size(), 2u);
  fs::create_directories(out.path() / "pred");
  fs::copy_file(test_set.cases[1].seg, out.path() / "pred" / (test_set.cases[0].id + ".nii.gz"));
  fs::copy_file(test_set.cases[0].seg, out.path() / "pred" / (test_set.cases[1].id + ".nii.gz"));
  auto r = run_kdseg("evaluate --pred " + out.str("pred") + " --ref " + kCohort + "/test --out " +
                     out.str("eval") + " --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json s = nlohmann::json::parse(std::ifstream(out.str("eval/summary.json")));
  EXPECT_LT(s["columns"]["dice_wt"]["mean"].get<double>(), 0.9);
  EXPECT_GT(s["columns"]["hd95_wt"]["mean"].get<double>(), 3.0);
}

TEST(CohortPipeline, PredictChoosesItsPrecisionAndRecordsIt) {
  // The default --precision auto is bf16 exactly where the CPU computes it natively; the choice
  // is printed and lands in config.json's "resolved"; --bf16 is --precision bf16.
  ScratchDir out("e2e_precision");
  auto t = run_kdseg("train --data " + kCohort + "/labeled --out " + out.str("run") +
                     " --steps 2 --patch 32,32,32 --val-every 0 --model-options "
                     "'{\"widths\":[8,16,32,64]}' --threads 2 --quiet");
  ASSERT_EQ(t.exit_code, 0) << t.output;
  const std::string model_in =
      "predict --model " + out.str("run/checkpoints/last.pt") + " --in " + kCohort + "/test";
  const std::string predict = model_in + " --tta none --threads 2 --out ";
  auto resolved = [&](const std::string& folder) {
    return nlohmann::json::parse(std::ifstream(out.str(folder + "/config.json")))["resolved"];
  };
  auto a = run_kdseg(predict + out.str("auto"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  // Native bf16 as /proc/cpuinfo lists it (Runtime.PrecisionAuto... checks the detection too).
  std::ifstream cpuinfo("/proc/cpuinfo");
  const std::string flags((std::istreambuf_iterator<char>(cpuinfo)),
                          std::istreambuf_iterator<char>());
  const bool has_bf16 =
      flags.find("avx512_bf16") != std::string::npos || flags.find("amx_bf16") != std::string::npos;
  const std::string native = has_bf16 ? "bf16" : "fp32";
  EXPECT_NE(a.output.find("predict: precision " + native + " (auto: "), std::string::npos)
      << a.output;
  EXPECT_EQ(resolved("auto")["precision"], native);
  // How the student ran is said too, with why, and recorded: through oneDNN where the build has
  // it and the CPU has AVX-512 (measured faster there), LibTorch on an AVX2-only CPU (measured
  // faster there for the student: docs/engines.md) and without oneDNN.
#if defined(KDSEG_HAVE_ONEDNN)
  const bool onednn = flags.find(" avx512f") != std::string::npos;
#else
  const bool onednn = false;
#endif
  const std::string engine = onednn
                                 ? "student: oneDNN " + native + " ("
                                 : "student: LibTorch " + std::string(has_bf16 ? "bf16" : "fp32");
  EXPECT_NE(a.output.find("predict: " + engine), std::string::npos) << a.output;
  EXPECT_EQ(resolved("auto")["engines"][0].get<std::string>().rfind(engine, 0), 0u)
      << resolved("auto");
  EXPECT_NE(resolved("auto")["engines"][0].get<std::string>().find("; auto: "), std::string::npos)
      << "the reason of the choice: " << resolved("auto");
  EXPECT_EQ(resolved("auto")["tta"], "no flips (--tta none)");
  ASSERT_EQ(run_kdseg(predict + out.str("fp32") + " --precision fp32 --quiet").exit_code, 0);
  EXPECT_EQ(resolved("fp32")["precision"], "fp32");
  ASSERT_EQ(run_kdseg(model_in + " --tta xy --threads 2 --out " + out.str("torch") +
                      " --precision fp32 --engine torch --quiet")
                .exit_code,
            0);
  EXPECT_EQ(resolved("torch")["engines"],
            nlohmann::json::array({"student: LibTorch fp32; asked for (--engine torch)"}));
  EXPECT_EQ(resolved("torch")["tta"], "4 flips (xy), one per pass");
  // --bf16 where bf16 is native; elsewhere refused (emulated: many times slower), naming the
  // flag that runs it anyway.
  auto bf16 = run_kdseg(predict + out.str("bf16") + " --bf16 --quiet");
  if (has_bf16) {
    ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
    EXPECT_EQ(resolved("bf16")["precision"], "bf16");
  } else {
    EXPECT_EQ(bf16.exit_code, 1) << bf16.output;
    EXPECT_NE(bf16.output.find("--allow-emulated-bf16"), std::string::npos) << bf16.output;
    EXPECT_FALSE(fs::exists(out.path() / "bf16" / "config.json")) << "nothing written";
  }
  auto bad = run_kdseg(predict + out.str("bad") + " --precision fp16 --quiet");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--precision fp16"), std::string::npos) << bad.output;
}

TEST(CohortPipeline, OutputsMadeFromOtherModelsAreNeitherKeptNorMixed) {
  // Two models; a folder predicted by one is not taken as done for the other: predict and
  // pseudo-label refuse, naming what changed, until --overwrite redoes every case.
  ScratchDir out("e2e_provenance");
  for (const std::string seed : {"1", "2"}) {
    auto t = run_kdseg("train --data " + kCohort + "/labeled --out " + out.str("run" + seed) +
                       " --steps 2 --patch 32,32,32 --val-every 0 --seed " + seed +
                       " --model-options '{\"widths\":[8,16,32,64]}' --threads 2 --quiet");
    ASSERT_EQ(t.exit_code, 0) << t.output;
  }
  const std::string a = " --model " + out.str("run1/checkpoints/last.pt");
  const std::string b = " --model " + out.str("run2/checkpoints/last.pt");
  const std::string predict =
      "predict --in " + kCohort + "/test --threads 2 --out " + out.str("pred");
  ASSERT_EQ(run_kdseg(predict + a + " --tta none").exit_code, 0);
  auto same = run_kdseg(predict + a + " --tta none");
  ASSERT_EQ(same.exit_code, 0) << same.output;
  EXPECT_NE(same.output.find("2 already done"), std::string::npos) << same.output;
  auto other = run_kdseg(predict + b + " --tta none");
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_NE(other.output.find("changed: models"), std::string::npos) << other.output;
  auto tta = run_kdseg(predict + a + " --tta xy");
  EXPECT_EQ(tta.exit_code, 1) << tta.output;
  EXPECT_NE(tta.output.find("changed: tta"), std::string::npos) << tta.output;
  auto redo = run_kdseg(predict + b + " --tta none --overwrite");
  ASSERT_EQ(redo.exit_code, 0) << redo.output;
  EXPECT_NE(redo.output.find("2 case(s) written, 0 already done"), std::string::npos)
      << redo.output;
  const auto record = nlohmann::json::parse(std::ifstream(out.str("pred/provenance.json")));
  ASSERT_EQ(record["models"].size(), 1u);
  EXPECT_EQ(record["models"][0]["digest"].get<std::string>().size(), 16u);

  const std::string pseudo = "pseudo-label --in " + kCohort +
                             "/unlabeled --tta none --threads 2 "
                             "--out " +
                             out.str("pseudo");
  ASSERT_EQ(run_kdseg(pseudo + a).exit_code, 0);
  auto teachers = run_kdseg(pseudo + a + b);
  EXPECT_EQ(teachers.exit_code, 1) << teachers.output;
  EXPECT_NE(teachers.output.find("changed: models"), std::string::npos) << teachers.output;
  auto target = run_kdseg(pseudo + a + " --target soft");
  EXPECT_EQ(target.exit_code, 1) << target.output;
  EXPECT_NE(target.output.find("target"), std::string::npos) << target.output;
  ASSERT_EQ(run_kdseg(pseudo + a + b + " --overwrite").exit_code, 0);
  const auto ds = nlohmann::json::parse(std::ifstream(out.str("pseudo/dataset.json")));
  EXPECT_EQ(ds["teachers"].size(), 2u);
}

TEST(CohortPipeline, TheLabelledSplitHoldsEveryTumourKind) {
  // The fixture's 3 labelled cases are stratified: one enhancing, one non-enhancing, one
  // multifocal, each generated as asked; cohort.json counts every split's kinds.
  const auto cohort = nlohmann::json::parse(std::ifstream(kCohort + "/cohort.json"));
  EXPECT_EQ(cohort["generator_version"], "kdseg-synth-2");
  EXPECT_TRUE(cohort["stratified_labeled"].get<bool>());
  int n_labeled = 0, n_other = 0;
  std::map<std::string, int> kinds;
  for (const auto& c : cohort["cases"]) {
    const std::string kind = c["tumour"]["kind"];
    if (c["split"] == "labeled") {
      ++n_labeled;
      ++kinds[kind];
      EXPECT_EQ(c["stratified_kind"], kind) << c["id"];
      EXPECT_EQ(c["tumour"]["enhancing"].get<bool>(), kind != "non-enhancing") << c["id"];
    } else {
      ++n_other;
      EXPECT_FALSE(c.contains("stratified_kind")) << c["id"] << ": drawn, not chosen";
    }
  }
  EXPECT_EQ(n_labeled, 3);
  EXPECT_EQ(n_other, 4);
  for (const char* kind : {"enhancing", "non-enhancing", "multifocal"}) {
    EXPECT_EQ(kinds[kind], 1) << kind;
    EXPECT_EQ(cohort["tumour_kinds"]["labeled"][kind], 1) << kind;
  }
}

TEST(CohortPipeline, MontageDrawsACase) {
  // Montages of an enhancing and a non-enhancing case (cohort.json's kinds), decoded by
  // tests/python/png_stats.py: five panels (T1, T1CE, T2, FLAIR, labels over FLAIR) of 240 px and
  // 4 px gaps; the four images are not blank and uncoloured; the label panel shows oedema green
  // in both, ET yellow only where the tumour enhances.
  ScratchDir out("e2e_montage");
  for (const auto& [id, enhancing] : {std::pair<std::string, bool>{"SYN_L0001", true},
                                      std::pair<std::string, bool>{"SYN_L0002", false}}) {
    const std::string png = out.str(id + ".png");
    auto r = run_kdseg("montage --case " + kCohort + "/labeled/" + id + " --out " + png);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(id + " -> " + png + " (1224x"), std::string::npos) << r.output;
    auto stats = test::run_command(std::string(KDSEG_SYSTEM_PYTHON) + " " + KDSEG_SOURCE_DIR +
                                   "/tests/python/png_stats.py " + png + " 5");
    ASSERT_EQ(stats.exit_code, 0) << stats.output;
    const auto s = nlohmann::json::parse(stats.output);
    EXPECT_EQ(s["width"], 5 * 240 + 6 * 4) << stats.output;
    EXPECT_GT(s["height"].get<int>(), 200) << stats.output;
    for (int k = 0; k < 4; ++k) {
      EXPECT_GT(s["panels"][k]["grey_std"].get<double>(), 10) << id << " panel " << k;
      for (const char* colour : {"red", "green", "yellow"})
        EXPECT_EQ(s["panels"][k][colour], 0) << id << " panel " << k << " " << colour;
    }
    const auto& labels = s["panels"][4];
    EXPECT_GT(labels["green"].get<int>(), 100) << id << ": " << labels;
    if (enhancing)
      EXPECT_GT(labels["yellow"].get<int>(), 100) << id << ": " << labels;
    else
      EXPECT_EQ(labels["yellow"], 0) << id << ": " << labels;
  }
}

}  // namespace
}  // namespace kdseg
