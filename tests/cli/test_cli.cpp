// The command line: flags bound once to the options structs, --config precedence, and the
// commands run as a user runs them (exit codes, outputs, messages).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "kdseg/cli.h"
#include "kdseg/io/nifti.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::phantom_labels;
using test::run_kdseg;
using test::ScratchDir;
using test::write_case;
namespace fs = std::filesystem;

void parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes them last-first
  app.parse(args);
}

TEST(CliParser, EvaluateFlagsFillTheOptionsStruct) {
  CLI::App app;
  cli::configure_root(app);
  EvaluateOptions opt;
  RuntimeOptions rt;
  cli::add_evaluate_flags(app, opt, rt);
  parse(app, {"evaluate", "--pred", "p", "--ref", "r", "--out", "o", "--pred-labels", "msd",
              "--threads", "3"});
  EXPECT_EQ(opt.pred, "p");
  EXPECT_EQ(opt.ref, "r");
  EXPECT_EQ(opt.out, "o");
  EXPECT_EQ(opt.pred_labels, "msd");
  EXPECT_EQ(opt.ref_labels, "auto");  // the struct's default stands
  EXPECT_EQ(rt.threads, 3);
}

TEST(CliParser, HelpPrintsTheStructDefaults) {
  CLI::App app;
  cli::configure_root(app);
  EvaluateOptions opt;
  RuntimeOptions rt;
  CLI::App* cmd = cli::add_evaluate_flags(app, opt, rt);
  std::string help = cmd->help();
  EXPECT_NE(help.find("--pred-labels"), std::string::npos);
  EXPECT_NE(help.find("auto"), std::string::npos);  // default shown
  EXPECT_NE(help.find("--threads"), std::string::npos);
  EXPECT_NE(help.find("--config FILE"), std::string::npos);
}

TEST(CliParser, MissingRequiredFlagIsAUsageError) {
  CLI::App app;
  cli::configure_root(app);
  EvaluateOptions opt;
  RuntimeOptions rt;
  cli::add_evaluate_flags(app, opt, rt);
  EXPECT_THROW(parse(app, {"evaluate", "--pred", "p"}), CLI::RequiredError);
  CLI::App app2;
  cli::configure_root(app2);
  cli::add_evaluate_flags(app2, opt, rt);
  EXPECT_THROW(
      parse(app2, {"evaluate", "--pred", "p", "--ref", "r", "--out", "o", "--threads", "-2"}),
      CLI::ValidationError);
}

TEST(CliParser, ConfigFileSitsBetweenDefaultsAndFlags) {
  ScratchDir dir("cfg");
  {
    std::ofstream f(dir.str("c.json"));
    f << R"({"pred": "from_config", "ref": "r", "out": "o", "threads": 4, "ref-labels": "msd"})";
  }
  CLI::App app;
  cli::configure_root(app);
  EvaluateOptions opt;
  RuntimeOptions rt;
  CLI::App* cmd = cli::add_evaluate_flags(app, opt, rt);
  parse(app, {"evaluate", "--config", dir.str("c.json"), "--threads", "1"});
  EXPECT_EQ(opt.pred, "from_config");  // config over default
  EXPECT_EQ(opt.ref_labels, "msd");
  EXPECT_EQ(rt.threads, 1);            // flag over config
  EXPECT_EQ(opt.pred_labels, "auto");  // default where neither speaks
  // The resolved configuration records what was in force, and reads back as a config file.
  nlohmann::json j = cli::resolved_config(cmd);
  EXPECT_EQ(j["pred"], "from_config");
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["pred-labels"], "auto");
  EXPECT_EQ(j["quiet"], false);
  {
    std::ofstream f(dir.str("resolved.json"));
    f << j.dump();
  }
  CLI::App again;
  cli::configure_root(again);
  EvaluateOptions opt2;
  RuntimeOptions rt2;
  cli::add_evaluate_flags(again, opt2, rt2);
  parse(again, {"evaluate", "--config", dir.str("resolved.json")});
  EXPECT_EQ(opt2.pred, "from_config");
  EXPECT_EQ(rt2.threads, 1);
}

TEST(CliParser, SynthFlagsFillTheOptionsStruct) {
  CLI::App app;
  cli::configure_root(app);
  synth::SynthOptions opt;
  RuntimeOptions rt;
  cli::add_synth_flags(app, opt, rt);
  parse(app, {"synth", "--out", "c", "--labeled", "3", "--unlabeled", "5", "--test", "2",
              "--spacing", "3", "--seed", "9"});
  EXPECT_EQ(opt.out, "c");
  EXPECT_EQ(opt.n_labeled, 3);
  EXPECT_EQ(opt.n_unlabeled, 5);
  EXPECT_EQ(opt.n_test, 2);
  EXPECT_EQ(opt.spacing_mm, 3);
  EXPECT_EQ(opt.seed, 9u);
  EXPECT_EQ(opt.compression, synth::SynthOptions{}.compression);
  CLI::App bad;
  cli::configure_root(bad);
  cli::add_synth_flags(bad, opt, rt);
  EXPECT_THROW(parse(bad, {"synth", "--out", "c", "--spacing", "7"}), CLI::ValidationError);
}

TEST(CliParser, BadConfigFileIsReported) {
  ScratchDir dir("badcfg");
  {
    std::ofstream f(dir.str("c.json"));
    f << "{not json";
  }
  CLI::App app;
  cli::configure_root(app);
  EvaluateOptions opt;
  RuntimeOptions rt;
  cli::add_evaluate_flags(app, opt, rt);
  EXPECT_THROW(parse(app, {"evaluate", "--config", dir.str("c.json")}), CLI::ParseError);
}

// ------------------------------------------------------------------ the binary, as a user runs it

class CliCommands : public ::testing::Test {
 protected:
  static constexpr std::array<int64_t, 3> kDim{20, 20, 16};
  ScratchDir dir{"cmds"};
  void make_reference(const std::string& root, int n) {
    for (int i = 0; i < n; ++i)
      write_case(root, "CASE_" + std::to_string(i), Layout::brats2021,
                 phantom_labels(kDim, {10, 10, 8}, 4.0 + i));
  }
};

TEST_F(CliCommands, EveryCommandHasHelp) {
  // Every subcommand `kdseg --help` lists has its own --help, naming it and its options; the
  // list holds every command (the LibTorch ones only where the build has LibTorch).
  auto root = run_kdseg("--help");
  ASSERT_EQ(root.exit_code, 0) << root.output;
  const size_t listed_at = root.output.find("Subcommands:");
  ASSERT_NE(listed_at, std::string::npos) << root.output;
  std::vector<std::string> commands;
  std::istringstream lines(root.output.substr(listed_at));
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("  ", 0) == 0 && line.size() > 2 && line[2] != ' ')
      commands.push_back(line.substr(2, line.find(' ', 2) - 2));
  std::vector<std::string> expected{"synth",    "montage", "models", "check",
                                    "evaluate", "report",  "export"};
  if (run_kdseg("--version").output.find("without LibTorch") == std::string::npos)
    for (const char* c : {"train", "predict", "pseudo-label", "reproduce"}) expected.push_back(c);
  for (const std::string& c : expected)
    EXPECT_NE(std::find(commands.begin(), commands.end(), c), commands.end())
        << c << " is not listed:\n"
        << root.output;
  for (const std::string& cmd : commands) {
    auto r = run_kdseg(cmd + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd << ":\n" << r.output;
    EXPECT_NE(r.output.find("Usage: kdseg " + cmd), std::string::npos) << cmd << ":\n" << r.output;
    EXPECT_NE(r.output.find("--help"), std::string::npos) << cmd << ":\n" << r.output;
    EXPECT_NE(r.output.find("Options:"), std::string::npos) << cmd << ":\n" << r.output;
  }
  auto v = run_kdseg("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.output.find("kdseg"), std::string::npos);
}

TEST_F(CliCommands, EvaluateScoresAPerfectAndAShiftedPrediction) {
  make_reference(dir.str("ref"), 2);
  // CASE_0: perfect prediction; CASE_1: the phantom moved 2 voxels along x.
  write_labels(dir.str("pred/CASE_0.nii.gz"), phantom_labels(kDim, {10, 10, 8}, 4.0));
  write_labels(dir.str("pred/CASE_1.nii.gz"), phantom_labels(kDim, {12, 10, 8}, 5.0));
  auto r = run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + dir.str("ref") + " --out " +
                     dir.str("eval") + " --threads 2 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("over 2 case(s) scored"), std::string::npos) << r.output;
  std::ifstream csv(dir.str("eval/metrics.csv"));
  std::string header, row0, row1;
  std::getline(csv, header);
  std::getline(csv, row0);
  std::getline(csv, row1);
  EXPECT_EQ(header.rfind("id,dice_et,dice_wt,dice_tc,hd95_et", 0), 0u) << header;
  EXPECT_EQ(row0.rfind("CASE_0,1,1,1,0,0,0,", 0), 0u) << row0;
  EXPECT_EQ(row1.rfind("CASE_1,", 0), 0u);
  nlohmann::json s = nlohmann::json::parse(std::ifstream(dir.str("eval/summary.json")));
  EXPECT_EQ(s["n_cases"], 2);
  double wt_mean = s["columns"]["dice_wt"]["mean"];
  EXPECT_GT(wt_mean, 0.7);
  EXPECT_LT(wt_mean, 1.0);
  // HD95 of the shifted case is the shift: 2 mm.
  EXPECT_NEAR(s["columns"]["hd95_wt"]["p75"].get<double>(), 1.5, 0.5 + 1e-9);
  EXPECT_TRUE(fs::exists(dir.str("eval/config.json")));
}

TEST_F(CliCommands, EvaluateReportsMissingAndBadCasesAndStillScoresTheRest) {
  make_reference(dir.str("ref"), 3);
  write_labels(dir.str("pred/CASE_0.nii.gz"), phantom_labels(kDim, {10, 10, 8}, 4.0));
  // CASE_1 missing; CASE_2 on another grid; EXTRA has no reference.
  write_labels(dir.str("pred/CASE_2.nii.gz"), phantom_labels({10, 10, 8}, {5, 5, 4}, 3.0));
  write_labels(dir.str("pred/EXTRA.nii.gz"), phantom_labels(kDim, {10, 10, 8}, 4.0));
  auto r = run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + dir.str("ref") + " --out " +
                     dir.str("eval") + " --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("CASE_1: no prediction"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("differs from the reference"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no reference case EXTRA"), std::string::npos) << r.output;
  nlohmann::json s = nlohmann::json::parse(std::ifstream(dir.str("eval/summary.json")));
  EXPECT_EQ(s["n_cases"], 1);
  EXPECT_EQ(s["failures"].size(), 3u);
}

TEST_F(CliCommands, CheckListsCasesAndEveryProblem) {
  make_reference(dir.str("data"), 3);
  auto ok = run_kdseg("check " + dir.str("data") + " --quiet");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("brats2021 layout, 3 case(s), 3 labelled"), std::string::npos)
      << ok.output;
  EXPECT_NE(ok.output.find("20x20x16"), std::string::npos);
  EXPECT_NE(ok.output.find("LPS"), std::string::npos);
  EXPECT_NE(ok.output.find("no problems found"), std::string::npos);
  // Break two cases in two ways; both problems are listed in one pass.
  fs::remove(dir.path() / "data" / "CASE_0" / "CASE_0_flair.nii.gz");
  {
    std::ofstream f(dir.str("data/CASE_2/CASE_2_t2.nii.gz"), std::ios::binary | std::ios::trunc);
    f << "garbage";
  }
  auto bad = run_kdseg("check " + dir.str("data") + " --quiet");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("missing modality flair"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("CASE_2_t2.nii.gz"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("2 problem(s)"), std::string::npos) << bad.output;
}

TEST_F(CliCommands, CheckAndEvaluateReadAnNnunetDataset) {
  // An nnU-Net dataset with region labels: check names its label values; evaluate scores
  // predictions written in the dataset's own values (ET = 3) against labelsTr/.
  const std::string ds = dir.str("Dataset137_BraTS");
  for (int i = 0; i < 2; ++i)
    write_case(ds, "CASE_" + std::to_string(i), Layout::nnunet,
               phantom_labels(kDim, {10, 10, 8}, 4.0 + i));
  auto ok = run_kdseg("check " + ds + " --quiet");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("nnunet layout (labels nnunet(1=ED,2=NCR,3=ET)), 2 case(s), 2 labelled"),
            std::string::npos)
      << ok.output;
  for (int i = 0; i < 2; ++i) {
    LabelMap pred = phantom_labels(kDim, {10, 10, 8}, 4.0 + i);
    labels_to_convention(pred, Layout::nnunet);
    write_labels(dir.str("pred/CASE_" + std::to_string(i) + ".nii.gz"), pred);
  }
  for (const std::string& ref : {ds, ds + "/labelsTr"}) {
    auto r = run_kdseg("evaluate --pred " + dir.str("pred") + " --ref " + ref + " --out " +
                       dir.str("eval") + " --quiet");
    ASSERT_EQ(r.exit_code, 0) << ref << "\n" << r.output;
    std::ifstream csv(dir.str("eval/metrics.csv"));
    std::string header, row0;
    std::getline(csv, header);
    std::getline(csv, row0);
    EXPECT_EQ(row0.rfind("CASE_0,1,1,1,0,0,0,", 0), 0u) << ref << ": " << row0;
  }
  // A dataset.json whose channels cannot be mapped: a non-zero exit naming the file.
  std::ofstream(fs::path(ds) / "dataset.json")
      << R"({"channel_names": {"0": "T1", "1": "T2", "2": "FLAIR", "3": "ADC"},
             "labels": {"background": 0, "ED": 1, "NCR": 2, "ET": 3}})";
  auto bad = run_kdseg("check " + ds + " --quiet");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("dataset.json"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("no t1ce"), std::string::npos) << bad.output;
}

TEST_F(CliCommands, ABadDeviceIsRefusedBeforeAnyWork) {
  make_reference(dir.str("data"), 1);
  auto r = run_kdseg("check " + dir.str("data") + " --device tpu0 --quiet");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--device tpu0"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("no problems found"), std::string::npos) << r.output;
}

TEST_F(CliCommands, CheckOnAnEmptyFolderFailsClearly) {
  fs::create_directories(dir.path() / "empty");
  auto r = run_kdseg("check " + dir.str("empty"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("holds no cases"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg

namespace kdseg {
namespace {

TEST(CliReproduce, DryRunPlansEveryModelWithoutTraining) {
  test::ScratchDir dir("cli_reproduce_dry_run");
  auto r = test::run_kdseg("reproduce --preset tiny --dry-run --threads 2 --out " + dir.str("exp"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Plan of reproduce --preset tiny: 1 seed(s); 3 labelled, 4 unlabelled"),
            std::string::npos)
      << r.output;
  // Teachers: 60 steps over 3 labelled cases at batch 2 (2 steps an epoch: 30 epochs); the
  // student's runs over 3 + 4 cases (4 steps an epoch).
  EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(\nunet +teacher +60 +30\.0 +2 )")))
      << r.output;
  EXPECT_TRUE(
      std::regex_search(r.output, std::regex(R"(\ncascade +teacher +60 +30\.0 +2 +32x32x32 )")))
      << r.output;
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex(R"(\nstudent +student, control, oracle +60 +15\.0 +4 +32x32x32 )")))
      << r.output;
  // Nothing is timed unless asked: the plan comes at once, with a hint.
  EXPECT_EQ(r.output.find("Projected training time:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Add --time-steps"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "exp")) << "a dry run writes nothing";

  auto timed = test::run_kdseg("reproduce --preset tiny --dry-run --time-steps --threads 2 --out " +
                               dir.str("exp"));
  ASSERT_EQ(timed.exit_code, 0) << timed.output;
  EXPECT_NE(timed.output.find("Projected training time:"), std::string::npos) << timed.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "exp")) << "a dry run writes nothing";
}

TEST(CliReproduce, PaperDryRunPrintsItsPlanAtOnce) {
  // The paper preset's plan: its sizes, and no step timed (each would be a paper-size step).
  test::ScratchDir dir("cli_reproduce_paper_plan");
  auto r =
      test::run_kdseg("reproduce --preset paper --dry-run --threads 1 --out " + dir.str("exp"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex(R"(\nunet +teacher +160000 .* 128x128x128 )")))
      << r.output;
  EXPECT_EQ(r.output.find("Projected training time:"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kdseg
