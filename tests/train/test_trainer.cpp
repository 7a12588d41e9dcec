// The training engine (train/trainer.h, schedule.h, optimizer.h) on tiny phantom cases.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kdseg/models/checkpoint.h"
#include "kdseg/train/trainer.h"
#include "models/tiny_configs.h"
#include "support/test_support.h"

namespace kdseg {
namespace {
namespace fs = std::filesystem;

TEST(Schedule, ThePapersSchedulesAsFunctionsOfTheStep) {
  ScheduleOptions s;  // step: x0.1 at 75 %
  s.lr = 1e-4;
  EXPECT_DOUBLE_EQ(learning_rate(s, 0, 1000, 100), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(s, 749, 1000, 100), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(s, 750, 1000, 100), 1e-5);
  s.kind = "exp";  // x0.99 per epoch
  s.lr = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(s, 99, 1000, 100), 0.1);
  EXPECT_NEAR(learning_rate(s, 250, 1000, 100), 0.1 * 0.99 * 0.99, 1e-15);
  s.kind = "poly";
  EXPECT_NEAR(learning_rate(s, 500, 1000, 100), 0.1 * std::pow(0.5, 0.9), 1e-15);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1000, 1000, 100), 0.0);
  s.kind = "constant";
  s.warmup = 4;
  EXPECT_DOUBLE_EQ(learning_rate(s, 0, 1000, 100), 0.1 / 5);
  EXPECT_DOUBLE_EQ(learning_rate(s, 4, 1000, 100), 0.1);
  s.kind = "cosine";
  EXPECT_THROW(validate_schedule(s), std::exception);
}

// Our optimisers follow LibTorch's update rules exactly.
TEST(Optimizer, MatchesLibTorchAdamAndSgd) {
  for (const char* kind : {"adam", "sgd"}) {
    torch::manual_seed(1);
    at::Tensor target = torch::randn({5, 3});
    at::Tensor a = torch::randn({5, 3}).requires_grad_(), b = a.detach().clone().requires_grad_();
    OptimizerOptions o;
    o.kind = kind;
    o.weight_decay = 1e-3;
    Optimizer ours({{"w", a}}, o);
    std::unique_ptr<torch::optim::Optimizer> ref;
    if (o.kind == "adam")
      ref = std::make_unique<torch::optim::Adam>(
          std::vector<at::Tensor>{b}, torch::optim::AdamOptions(0.01).weight_decay(1e-3));
    else
      ref = std::make_unique<torch::optim::SGD>(
          std::vector<at::Tensor>{b},
          torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-3));
    for (int step = 0; step < 6; ++step) {
      ours.zero_grad();
      ref->zero_grad();
      ((a - target).pow(3).sum()).backward();
      ((b - target).pow(3).sum()).backward();
      ours.step(0.01);
      ref->step();
    }
    EXPECT_TRUE(at::allclose(a, b, 1e-6, 1e-7)) << kind;
    // Its state comes back exactly
    Optimizer again({{"w", a}}, o);
    again.load_state(ours.state(), "test");
    EXPECT_EQ(again.n_steps(), 6);
    auto s1 = ours.state(), s2 = again.state();
    ASSERT_EQ(s1.size(), s2.size());
    for (const auto& kv : s1) EXPECT_TRUE(at::equal(kv.value(), s2.at(kv.key()))) << kv.key();
  }
}

class Training : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::ScratchDir("trainer");
    for (int i = 0; i < 4; ++i)
      test::write_case(dir_->str("labeled"), "L" + std::to_string(i), Layout::brats2021,
                       test::phantom_labels({30, 28, 24}, {14.0 + i, 13, 12}, 6 + i));
    test::write_case(dir_->str("unlabeled"), "U0", Layout::brats2021,
                     test::phantom_labels({30, 28, 24}, {14, 13, 12}, 6), false);
    fs::create_directories(dir_->path() / "empty");
  }
  static void TearDownTestSuite() { delete dir_; }

  static TrainOptions tiny(const std::string& out) {
    TrainOptions o;
    o.model = "student";
    o.model_options = test::tiny_config("student");
    o.data = {{dir_->str("labeled"), 1.0}};
    o.out = dir_->str(out);
    o.cache = dir_->str("cache");
    o.steps = 4;
    o.batch = 2;
    o.patch = {16, 16, 16};
    o.lr = 1e-3;
    o.val_every = 2;
    o.log_every = 1;
    o.checkpoint_every = 2;
    o.val_fraction = 0.25;
    o.workers = 1;
    o.quiet = true;
    return o;
  }
  static test::ScratchDir* dir_;
};
test::ScratchDir* Training::dir_ = nullptr;

TEST_F(Training, ASeededRunGivesIdenticalLossesTwiceAndWritesItsFiles) {
  TrainResult a = train(tiny("seeded_a")), b = train(tiny("seeded_b"));
  ASSERT_EQ(a.losses.size(), 4u);
  EXPECT_EQ(a.losses, b.losses);
  for (double l : a.losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_EQ(a.val_steps, (std::vector<int64_t>{2, 4}));
  for (const char* f : {"config.json", "splits.json", "log.csv", "done.json", "checkpoints/last.pt",
                        "checkpoints/best.pt"})
    EXPECT_TRUE(fs::exists(dir_->path() / "seeded_a" / f)) << f;
  std::ifstream log(dir_->str("seeded_a/log.csv"));
  std::string header, line;
  std::getline(log, header);
  EXPECT_EQ(header.substr(0, 20), "step,epoch,loss,dice");
  int rows = 0;
  while (std::getline(log, line)) ++rows;
  EXPECT_EQ(rows, 4);
  // done.json: the last tenth of the steps' hard Dice on the training patches (here 1 step)
  const auto done = nlohmann::json::parse(std::ifstream(dir_->str("seeded_a/done.json")));
  EXPECT_EQ(done.at("train_hard_dice_steps").get<int64_t>(), 1);
  for (const char* r : {"wt", "tc", "et"}) {
    const double d = done.at("train_hard_dice").at(r).get<double>();
    EXPECT_GE(d, 0.0) << r;
    EXPECT_LE(d, 1.0) << r;
  }
  EXPECT_TRUE(done.at("warnings").is_array());
  // best.pt loads as a model whose plan records the spacing trained at
  Checkpoint info;
  load_checkpoint(dir_->str("seeded_a/checkpoints/best.pt"), &info);
  EXPECT_EQ(info.plan.spacing, (std::array<double, 3>{1, 1, 1}));
  EXPECT_EQ(info.plan.patch, (std::array<int64_t, 3>{16, 16, 16}));
  // Another seed differs
  TrainOptions c = tiny("seeded_c");
  c.seed = 7;
  EXPECT_NE(train(c).losses, a.losses);
  // The folder holds a run: a new run there is refused, --resume of a finished run is a no-op
  EXPECT_THROW(train(tiny("seeded_a")), std::exception);
  TrainOptions r = tiny("seeded_a");
  r.resume = true;
  EXPECT_EQ(train(r).steps, 4);
}

void expect_error(const TrainOptions& o, const std::string& needle) {
  try {
    train(o);
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(o.out) / "checkpoints" / "last.pt"));
  EXPECT_FALSE(fs::exists(fs::path(o.out) / "log.csv"));
}

TEST_F(Training, BadConfigurationFailsClearlyBeforeAnyWork) {
  TrainOptions o = tiny("bad_model");
  o.model = "transformer";
  expect_error(o, "transformer");
  EXPECT_FALSE(fs::exists(o.out));
  o = tiny("bad_patch");
  o.patch = {64, 64, 64};
  expect_error(o, "patch");
  o = tiny("bad_stride");
  o.patch = {20, 16, 16};
  expect_error(o, "stride");
  o = tiny("bad_empty");
  o.data = {{dir_->str("empty"), 1.0}};
  expect_error(o, "empty");
  o = tiny("bad_unlabelled");
  o.data = {{dir_->str("unlabeled"), 1.0}};
  expect_error(o, "no label map");
  o = tiny("bad_missing");
  o.data = {{dir_->str("nowhere"), 1.0}};
  expect_error(o, "nowhere");
}

TEST_F(Training, ResumeWithAnotherConfigurationIsRefused) {
  TrainOptions o = tiny("resume_other");
  o.steps = 2;
  train(o);
  o.resume = true;
  o.lr = 5e-3;
  try {
    train(o);
    ADD_FAILURE() << "resumed with another learning rate";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("lr"), std::string::npos) << e.what();
  }
  // A run folder moved elsewhere resumes there: its path is not part of what was trained.
  o.lr = tiny("x").lr;
  const std::string moved = dir_->str("resume_moved");
  fs::rename(o.out, moved);
  o.out = moved;
  o.steps = 3;
  EXPECT_EQ(train(o).steps, 3);
}

TEST_F(Training, InitStartsFromACheckpointsWeights) {
  // A run from a checkpoint's weights at a learning rate too small to move them ends where it
  // started; from random weights (its seed) it does not; another architecture is refused.
  train(tiny("init_from"));
  const std::string from = dir_->str("init_from/checkpoints/last.pt");
  const Checkpoint start = read_checkpoint(from);
  auto distance = [&](const std::string& run) {
    const Checkpoint end = read_checkpoint(dir_->str(run + "/checkpoints/last.pt"));
    double d = 0;
    for (const auto& kv : start.state)
      d = std::max(d, (end.state.at(kv.key()) - kv.value()).abs().max().item<double>());
    return d;
  };
  TrainOptions o = tiny("init_to");
  o.init = from;
  o.lr = 1e-12;
  o.steps = 2;
  o.seed = 99;
  train(o);
  EXPECT_LT(distance("init_to"), 1e-6);
  TrainOptions r = o;
  r.out = dir_->str("init_none");
  r.init.clear();
  train(r);
  EXPECT_GT(distance("init_none"), 1e-3);
  TrainOptions u = o;
  u.out = dir_->str("init_other");
  u.model = "unet";
  u.model_options = test::tiny_config("unet");
  expect_error(u, from);
}

// The mean teacher: the unlabelled term changes what the student learns, the teacher is saved
// beside it, and a resumed run continues the teacher as well as the student, bit for bit.
TEST_F(Training, MeanTeacherLearnsFromUnlabelledCasesAndResumesItsTeacher) {
  auto mt = [&](const std::string& out) {
    TrainOptions o = tiny(out);
    o.val_fraction = 0;
    o.val_every = 0;
    o.mean_teacher.unlabelled = {dir_->str("unlabeled")};
    o.mean_teacher.rampup = 0;
    o.mean_teacher.threshold = 0.5;  // every voxel a target: the term cannot vanish
    return o;
  };
  TrainOptions plain = tiny("mt_plain");
  plain.val_fraction = 0;
  plain.val_every = 0;
  train(plain);
  train(mt("mt_whole"));
  TrainOptions first = mt("mt_resumed");
  first.steps = 2;
  train(first);
  TrainOptions rest = mt("mt_resumed");
  rest.resume = true;
  train(rest);
  auto state = [&](const std::string& file) { return read_checkpoint(dir_->str(file)).state; };
  auto same = [](const StateDict& a, const StateDict& b) {
    for (const auto& kv : a)
      if (!at::equal(kv.value(), b.at(kv.key()))) return false;
    return true;
  };
  EXPECT_FALSE(same(state("mt_plain/checkpoints/last.pt"), state("mt_whole/checkpoints/last.pt")));
  EXPECT_FALSE(
      same(state("mt_whole/checkpoints/last.pt"), state("mt_whole/checkpoints/teacher.pt")));
  EXPECT_TRUE(same(state("mt_whole/checkpoints/last.pt"), state("mt_resumed/checkpoints/last.pt")));
  EXPECT_TRUE(
      same(state("mt_whole/checkpoints/teacher.pt"), state("mt_resumed/checkpoints/teacher.pt")));
  const auto done = nlohmann::json::parse(std::ifstream(dir_->str("mt_whole/done.json")));
  EXPECT_EQ(done.at("mean_teacher").at("unlabelled_cases"), 1);
  EXPECT_EQ(done.at("mean_teacher").at("confident_share"), 1.0);
}

// The acceptance test of crash safety: a run killed with SIGKILL and resumed ends with the same
// weights, optimiser state and losses as a run that was never interrupted.
TEST_F(Training, AResumeAfterSigkillEqualsTheUninterruptedRun) {
  const std::string common =
      "train --model student --model-options '{\"widths\":[8,8,16,16],\"norm_groups\":4}' "
      "--data " +
      dir_->str("labeled") + " --cache " + dir_->str("cache") +
      " --steps 7 --batch 2 --patch 16,16,16 --lr 1e-3 --val-every 3 --log-every 1 "
      "--checkpoint-every 2 --val-fraction 0.25 --workers 1 --threads 1 --quiet --out ";
  auto whole = test::run_kdseg(common + dir_->str("kill_whole"));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  auto killed = test::run_command("KDSEG_DEBUG_KILL_AFTER_STEP=5 " + std::string(KDSEG_BINARY) +
                                  " " + common + dir_->str("kill_resumed"));
  ASSERT_NE(killed.exit_code, 0) << "the run was not killed: " << killed.output;
  EXPECT_FALSE(fs::exists(dir_->path() / "kill_resumed" / "done.json"));
  Checkpoint at_kill = read_checkpoint(dir_->str("kill_resumed/checkpoints/last.pt"));
  EXPECT_EQ(at_kill.extra.at("step").toInt(), 4);  // steps 5 was done and lost
  auto resumed = test::run_kdseg(common + dir_->str("kill_resumed") + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;

  Checkpoint a = read_checkpoint(dir_->str("kill_whole/checkpoints/last.pt"));
  Checkpoint b = read_checkpoint(dir_->str("kill_resumed/checkpoints/last.pt"));
  ASSERT_EQ(a.state.size(), b.state.size());
  for (const auto& kv : a.state)
    EXPECT_TRUE(at::equal(kv.value(), b.state.at(kv.key()))) << kv.key();
  auto oa = a.extra.at("optimizer").toGenericDict(), ob = b.extra.at("optimizer").toGenericDict();
  ASSERT_EQ(oa.size(), ob.size());
  for (const auto& kv : oa)
    EXPECT_TRUE(at::equal(kv.value().toTensor(), ob.at(kv.key()).toTensor()))
        << kv.key().toStringRef();
  // The logs agree on every step's loss, learning rate and validation Dice
  auto columns = [](const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> rows;
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> cells;
      std::stringstream ss(line);
      std::string c;
      while (std::getline(ss, c, ',')) cells.push_back(c);
      cells.resize(13);
      rows.push_back(cells[0] + cells[2] + cells[3] + cells[4] + cells[5] + cells[9] + cells[10] +
                     cells[11] + cells[12]);
    }
    return rows;
  };
  EXPECT_EQ(columns(dir_->str("kill_whole/log.csv")), columns(dir_->str("kill_resumed/log.csv")));
}

TEST(TrainingChecks, ARegionTheModelNeverPredictsIsWarnedAbout) {
  // (C,3) counts: true positives, predicted, target voxels. WT learnt, TC predicted elsewhere
  // only, ET never predicted; a 4th region with no target voxels is not a finding.
  const at::Tensor counts =
      torch::tensor({50., 60., 70., 0., 12., 30., 0., 0., 20., 0., 5., 0.}, at::kDouble)
          .view({4, 3});
  const auto w = dead_region_warnings(counts, 20);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("none of the 30 TC voxels"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("last 20 steps"), std::string::npos) << w[0];
  EXPECT_NE(w[1].find("none of the 20 ET voxels"), std::string::npos) << w[1];
  EXPECT_NE(w[1].find("--seed"), std::string::npos) << w[1];
  EXPECT_TRUE(
      dead_region_warnings(torch::tensor({1., 1., 1.}, at::kDouble).view({1, 3}), 3).empty());
}

}  // namespace
}  // namespace kdseg
