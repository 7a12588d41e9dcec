// A miniature `kdseg reproduce` on the shared synthetic cohort: every stage writes its files, the
// tables and verdicts are printed, the teachers learn, and a rerun resumes instead of redoing.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>

#include "kdseg/io/dataset.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

namespace fs = std::filesystem;

TEST(Reproduce, MiniatureExperimentRunsEveryStageAndResumes) {
  test::ScratchDir dir("e2e_reproduce");
  // 80 teacher steps: at 40 the UNet and the ResUNet-VAE can still sit just under the 0.5
  // threshold everywhere (test WT 0.00-0.15 on two seeds); at 80 the best teacher reached WT
  // 0.67-0.78 and the ensemble 0.67-0.76 on seeds 1 and 2, well above the floor below.
  const std::string cmd = "reproduce --preset tiny --seeds 1 --cohort " +
                          std::string(KDSEG_TEST_COHORT) + " --out " + dir.str("exp") +
                          " --teacher-steps 80 --student-steps 40 --threads 2";
  auto r = test::run_kdseg(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Dice ET"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Paired differences (a - b)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("student - control"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("oracle - control"), std::string::npos) << r.output;

  const fs::path exp = dir.path() / "exp", s1 = exp / "seed1";
  const auto test_ids = discover_dataset(std::string(KDSEG_TEST_COHORT) + "/test").cases;
  for (const char* m : {"unet", "resunet-vae", "cascade", "student", "control", "oracle"}) {
    EXPECT_TRUE(fs::exists(s1 / "runs" / m / "done.json")) << m;
    EXPECT_TRUE(fs::exists(s1 / "runs" / m / "checkpoints" / "last.pt")) << m;
  }
  for (const char* m :
       {"unet", "resunet-vae", "cascade", "ensemble", "student", "control", "oracle"}) {
    for (const auto& c : test_ids)
      EXPECT_TRUE(fs::exists(s1 / "pred" / m / (c.id + ".nii.gz"))) << m << " " << c.id;
    EXPECT_TRUE(fs::exists(s1 / "eval" / m / "metrics.csv")) << m;
  }
  EXPECT_TRUE(fs::exists(s1 / "pseudo" / "dataset.json"));
  EXPECT_TRUE(fs::exists(s1 / "eval" / "pseudo" / "metrics.csv"));
  for (const char* f : {"config.json", "splits.json", "results.json", "results.md"})
    EXPECT_TRUE(fs::exists(exp / f)) << f;
  EXPECT_TRUE(fs::exists(exp / "report" / "index.html"));

  const nlohmann::json res = nlohmann::json::parse(std::ifstream((exp / "results.json").string()));
  ASSERT_EQ(res["methods"].size(), 7u);
  // (a)-(d) and the oracle against the control, 4 metrics each; 2 test cases: no verdicts.
  ASSERT_EQ(res["paired"].size(), 20u);
  for (const auto& p : res["paired"]) {
    EXPECT_NE(p["verdict"].get<std::string>().find("too few cases"), std::string::npos);
    EXPECT_GE(p["p_holm"].get<double>(), p["p"].get<double>());
  }
  // The oracle trained on the labelled cases and the unlabelled ones with their true labels.
  const auto oracle_config =
      nlohmann::json::parse(std::ifstream((s1 / "runs" / "oracle" / "config.json").string()));
  EXPECT_NE(oracle_config.dump().find("oracle-data"), std::string::npos);
  for (const auto& c : discover_dataset(std::string(KDSEG_TEST_COHORT) + "/unlabeled").cases)
    EXPECT_TRUE(fs::exists(exp / "oracle-data" / c.id / (c.id + "_seg.nii.gz"))) << c.id;
  // The student and the oracle drew from their second folder as the cases are pooled (3
  // labelled, 2 unlabelled: 2/5 of 80 samples = 32 expected); the control only from labelled.
  for (const auto& [run, folder] : std::vector<std::pair<std::string, fs::path>>{
           {"student", s1 / "pseudo"}, {"oracle", exp / "oracle-data"}}) {
    const auto done =
        nlohmann::json::parse(std::ifstream((s1 / "runs" / run / "done.json").string()));
    ASSERT_TRUE(done["data_folders"].contains(folder.string())) << done.dump();
    const int64_t n = done["data_folders"][folder.string()]["samples"].get<int64_t>();
    EXPECT_GE(n, 16) << run;
    EXPECT_LE(n, 48) << run;
  }
  const auto control_done =
      nlohmann::json::parse(std::ifstream((s1 / "runs" / "control" / "done.json").string()));
  EXPECT_EQ(control_done["data_folders"].size(), 1u);
  ASSERT_TRUE(res.contains("regime"));
  const std::string sentence = res["regime"]["sentence"];
  EXPECT_NE(r.output.find(sentence), std::string::npos) << r.output;
  EXPECT_EQ(res["regime"]["data_limited"].get<bool>(),
            sentence.find("data-limited") != std::string::npos);
  // The teachers learned something: WT Dice well above an untrained network's (this run
  // reaches ~0.75 for the ensemble and its best teacher on this machine; an untrained net's
  // near-0.5 probabilities score ~0.1-0.2)
  double best_teacher = 0;
  for (const char* m : {"unet", "resunet-vae", "cascade"})
    best_teacher = std::max(best_teacher, res["table"][m]["dice_wt"]["mean"].get<double>());
  EXPECT_GT(best_teacher, 0.45);
  EXPECT_GT(res["table"]["ensemble"]["dice_wt"]["mean"].get<double>(), 0.45);
  // Every run reports its training patches' hard Dice; the trainer's warnings are gathered.
  ASSERT_TRUE(res["warnings"].is_array());
  for (const char* m : {"unet", "resunet-vae", "cascade", "student", "control", "oracle"}) {
    const auto done =
        nlohmann::json::parse(std::ifstream((s1 / "runs" / m / "done.json").string()));
    EXPECT_TRUE(done["train_hard_dice"].contains("wt")) << m;
  }

  // A rerun finds every stage done
  r = test::run_kdseg(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("already finished"), std::string::npos) << r.output;
}

TEST(Reproduce, ParallelJobsTrainTheSameModelsAsOneProcess) {
  // Two one-thread processes at once (--jobs 2) against one one-thread process doing every model
  // in turn: the same seeds and data, so the same scores to the last bit. With the fine-tune
  // recipe, whose job must wait for its seed's student.
  test::ScratchDir dir("e2e_reproduce_jobs");
  auto run = [&](const std::string& name, int jobs) {
    const std::string cmd = "reproduce --preset tiny --seeds 1 --cohort " +
                            std::string(KDSEG_TEST_COHORT) + " --out " + dir.str(name) +
                            " --teacher-steps 10 --student-steps 4 --no-report --recipes "
                            "finetune --threads " +
                            std::to_string(jobs) + " --jobs " + std::to_string(jobs);
    auto r = test::run_kdseg(cmd);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  };
  const std::string serial = run("serial", 1), parallel = run("parallel", 2);
  EXPECT_EQ(serial.find("parallel jobs"), std::string::npos) << serial;
  EXPECT_NE(parallel.find("training 7 models as parallel jobs"), std::string::npos) << parallel;
  auto json_of = [&](const std::string& name, const std::string& file) {
    return nlohmann::json::parse(std::ifstream((dir.path() / name / file).string()));
  };
  const auto a = json_of("serial", "results.json"), b = json_of("parallel", "results.json");
  EXPECT_EQ(a["methods"], nlohmann::json({"unet", "resunet-vae", "cascade", "ensemble", "student",
                                          "student-ft", "control", "oracle"}));
  EXPECT_EQ(a["table"], b["table"]);
  EXPECT_EQ(a["pseudo"], b["pseudo"]);
  EXPECT_EQ(json_of("parallel", "config.json")["jobs"]["jobs"], 2);
  EXPECT_EQ(json_of("parallel", "config.json")["jobs"]["threads_per_job"], 1);
  // The fine-tune's row is judged as the student's is, and against it; it started from the
  // student's weights and trained on the labelled cases alone.
  int ft_pairs = 0;
  for (const auto& p : a["paired"])
    ft_pairs += p["a"] == "student-ft" && (p["b"] == "control" || p["b"] == "student");
  EXPECT_EQ(ft_pairs, 8);
  EXPECT_TRUE(a["regime"]["recipes"].contains("student-ft")) << a["regime"].dump();
  const auto ft = json_of("parallel", "seed1/runs/student-ft/config.json");
  EXPECT_EQ(ft["train"]["init"],
            (dir.path() / "parallel/seed1/runs/student/checkpoints/last.pt").string());
  EXPECT_EQ(ft["train"]["data"].size(), 1u);
  for (const char* m :
       {"unet", "resunet-vae", "cascade", "student", "student-ft", "control", "oracle"}) {
    const fs::path log = dir.path() / "parallel" / "logs" / ("seed1-" + std::string(m) + ".log");
    EXPECT_TRUE(fs::exists(log)) << log;
    EXPECT_GT(fs::file_size(log), 0u) << log;
  }
  // The experiment's options.json stays the experiment's: no job overwrote it with its own.
  const auto options = json_of("parallel", "options.json")["options"];
  EXPECT_EQ(options["only-seed"], 0);
  EXPECT_EQ(options["jobs"], 2);
  EXPECT_EQ(options["threads"], 2);
}

TEST(Reproduce, TeacherSetFromTheCommandLine) {
  // Two seeds of the student architecture as the ensemble: two runs, both in the ensemble.
  test::ScratchDir dir("e2e_reproduce_teachers");
  const std::string cmd = "reproduce --preset tiny --seeds 1 --cohort " +
                          std::string(KDSEG_TEST_COHORT) + " --out " + dir.str("exp") +
                          " --teachers student:2 --no-oracle --teacher-steps 10 "
                          "--student-steps 4 --no-report --recipes finetune --threads 2";
  auto r = test::run_kdseg(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path s1 = dir.path() / "exp" / "seed1";
  const nlohmann::json res =
      nlohmann::json::parse(std::ifstream((dir.path() / "exp" / "results.json").string()));
  EXPECT_EQ(res["methods"], nlohmann::json({"student-1", "student-2", "ensemble", "student",
                                            "student-ft", "control"}));
  EXPECT_FALSE(res.contains("regime"));
  // Different seeds: the two teachers' weights differ, and neither is the control (seed 1).
  const auto c1 =
      nlohmann::json::parse(std::ifstream((s1 / "runs/student-1/config.json").string()));
  const auto c2 =
      nlohmann::json::parse(std::ifstream((s1 / "runs/student-2/config.json").string()));
  EXPECT_EQ(c1["train"]["seed"].get<int>(), 1001);
  EXPECT_EQ(c2["train"]["seed"].get<int>(), 2001);
  const auto control =
      nlohmann::json::parse(std::ifstream((s1 / "runs/control/config.json").string()));
  EXPECT_EQ(control["train"]["seed"].get<int>(), 1);
  const auto pseudo = nlohmann::json::parse(std::ifstream((s1 / "pseudo/dataset.json").string()));
  EXPECT_EQ(pseudo["teachers"].size(), 2u);
  EXPECT_FALSE(fs::exists(s1 / "runs" / "oracle"));

  EXPECT_NE(test::run_kdseg("reproduce --teachers vnet:2 --out " + dir.str("bad")).exit_code, 0);

  // Other teachers in the same folder: the ensemble's predictions, the pseudo-labels and the
  // student are made again from them (each stage records what it was made from); the control,
  // trained on the labelled cases alone, is kept.
  const std::string other = "reproduce --preset tiny --seeds 1 --cohort " +
                            std::string(KDSEG_TEST_COHORT) + " --out " + dir.str("exp") +
                            " --teachers unet --no-oracle --teacher-steps 10 "
                            "--student-steps 4 --no-report --recipes finetune --threads 2";
  auto read_bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const auto student_before = read_bytes(s1 / "runs/student/checkpoints/last.pt");
  const auto ft_before = read_bytes(s1 / "runs/student-ft/checkpoints/last.pt");
  const auto control_before = read_bytes(s1 / "runs/control/checkpoints/last.pt");
  // When each pseudo-label and each ensemble prediction was written.
  auto written = [&]() {
    std::map<std::string, fs::file_time_type> t;
    for (const auto& e : fs::recursive_directory_iterator(s1))
      if (e.path().filename() == "pseudo.json" ||
          (e.path().parent_path().filename() == "ensemble" &&
           e.path().parent_path().parent_path().filename() == "pred" &&
           e.path().extension() == ".gz"))
        t[e.path().string()] = fs::last_write_time(e.path());
    return t;
  };
  const auto before = written();
  ASSERT_FALSE(before.empty());
  r = test::run_kdseg(other);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto after = written();
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [path, t] : before)
    EXPECT_NE(after.at(path), t) << path << " was kept from the other teachers";
  const auto again = nlohmann::json::parse(std::ifstream((s1 / "pseudo/dataset.json").string()));
  ASSERT_EQ(again["teachers"].size(), 1u) << "the pseudo-labels name the teachers that made them";
  const auto record =
      nlohmann::json::parse(std::ifstream((s1 / "pseudo/provenance.json").string()));
  EXPECT_EQ(record["models"].size(), 1u) << "and were made by them";
  const auto ens =
      nlohmann::json::parse(std::ifstream((s1 / "pred/ensemble/provenance.json").string()));
  EXPECT_EQ(ens["models"].size(), 1u) << "the ensemble's predictions too";
  // Said by the job that trained the student (its log) or, with --jobs 1, by reproduce itself.
  const std::string said = r.output + read_bytes(dir.path() / "exp/logs/seed1-student.log");
  EXPECT_NE(said.find("made from other inputs"), std::string::npos) << said;
  EXPECT_NE(read_bytes(s1 / "runs/student/checkpoints/last.pt"), student_before)
      << "the student trained anew on the new pseudo-labels";
  EXPECT_NE(read_bytes(s1 / "runs/student-ft/checkpoints/last.pt"), ft_before)
      << "and its fine-tune from it (the data did not change, the starting weights did)";
  EXPECT_EQ(read_bytes(s1 / "runs/control/checkpoints/last.pt"), control_before)
      << "the control's inputs did not change";
}

}  // namespace
}  // namespace kdseg
