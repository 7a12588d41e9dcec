// The pure parts of `kdseg reproduce`: the presets' recipes with their overrides, the teacher
// list, and the regime read from the oracle (the statistics: tests/eval/test_paired.cpp).
#include <gtest/gtest.h>

#include <cmath>

#include "kdseg/pipeline/reproduce.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(ExperimentRecipes, CpuPresetSizesAndOverrides) {
  ReproduceOptions o;  // preset cpu
  auto r = reproduce_recipes(o);
  ASSERT_EQ(r.size(), 7u);  // unet, resunet, resunet-vae, cascade, student, student-ft, -mt
  const ReproduceOptions resolved = with_preset(o);
  EXPECT_EQ(resolved.n_labeled, 4);
  EXPECT_EQ(resolved.n_test, 40);
  EXPECT_EQ(resolved.n_seeds, 3);
  for (const std::string m : {"unet", "resunet-vae", "student"}) {
    EXPECT_EQ(r[m].patch, (std::array<int64_t, 3>{48, 48, 48})) << m;
    EXPECT_EQ(r[m].steps, resolved.teacher_steps) << m;
    EXPECT_FALSE(r[m].bf16) << m;
  }
  EXPECT_EQ(r["cascade"].fixed_shape, (std::array<int64_t, 3>{64, 64, 64}));
  EXPECT_EQ(r["cascade"].steps, resolved.teacher_steps / 2);
  EXPECT_DOUBLE_EQ(r["unet"].lr, 1e-2);
  EXPECT_DOUBLE_EQ(r["resunet-vae"].lr, 3e-3);
  // One GroupNorm group per channel at width 8 (4 groups killed a seed's head channels).
  EXPECT_EQ(r["resunet-vae"].options.at("norm_groups").get<int>(), 8);
  // The fine-tune: the student's network, a quarter of its steps, a tenth of its rate; shown
  // by default (finetune) except in the paper and tiny presets.
  EXPECT_EQ(r["student-ft"].options, r["student"].options);
  EXPECT_EQ(r["student-ft"].steps, r["student"].steps / 4);
  EXPECT_DOUBLE_EQ(r["student-ft"].lr, r["student"].lr / 10);
  // The mean teacher: the student's own recipe (the control's budget in steps)
  EXPECT_EQ(r["student-mt"].options, r["student"].options);
  EXPECT_EQ(r["student-mt"].steps, r["student"].steps);
  EXPECT_DOUBLE_EQ(r["student-mt"].lr, r["student"].lr);
  EXPECT_EQ(resolved.student_recipes, "finetune");
  ReproduceOptions tiny;
  tiny.preset = "tiny";
  EXPECT_EQ(with_preset(tiny).student_recipes, "none");
  EXPECT_EQ(recipe_methods("finetune"), std::vector<std::string>{"student-ft"});
  EXPECT_EQ(recipe_methods("mean-teacher,finetune"),
            (std::vector<std::string>{"student-mt", "student-ft"}));
  EXPECT_TRUE(recipe_methods("none").empty());
  EXPECT_THROW(recipe_methods("mixup"), Error);
  EXPECT_THROW(recipe_methods("finetune,finetune"), Error);
  // A student-ft override may not change the network it starts from.
  ReproduceOptions bad;
  bad.models = nlohmann::json::parse(R"({"student-ft": {"options": {"widths": [4,8,16,32]}}})");
  EXPECT_THROW(reproduce_recipes(bad), Error);

  // Flags and --models overrides: steps from the flags, any recipe key from the JSON.
  o.teacher_steps = 40;
  o.student_steps = 10;
  o.models = nlohmann::json::parse(R"({"unet": {"bf16": true, "lr": 0.001, "patch": [32,32,32]}})");
  r = reproduce_recipes(o);
  EXPECT_TRUE(r["unet"].bf16);
  EXPECT_DOUBLE_EQ(r["unet"].lr, 1e-3);
  EXPECT_EQ(r["unet"].patch, (std::array<int64_t, 3>{32, 32, 32}));
  EXPECT_EQ(r["unet"].steps, 40);
  EXPECT_EQ(r["cascade"].steps, 20);
  EXPECT_EQ(r["student"].steps, 10);

  o.models = nlohmann::json::parse(R"({"unet": {"learning_rate": 0.1}})");
  EXPECT_THROW(reproduce_recipes(o), Error);
  o.models = nlohmann::json::parse(R"({"vnet": {}})");
  EXPECT_THROW(reproduce_recipes(o), Error);
  o.models = nlohmann::json::object();
  o.preset = "laptop";
  EXPECT_THROW(reproduce_recipes(o), Error);
}

TEST(ExperimentRecipes, PresetsDifferInStepsAndSeeds) {
  ReproduceOptions o;
  o.preset = "quick";
  ReproduceOptions q = with_preset(o);
  EXPECT_EQ(q.n_seeds, 1);
  o.preset = "long";
  ReproduceOptions l = with_preset(o);
  EXPECT_EQ(l.n_seeds, 3);
  EXPECT_EQ(l.teacher_steps, 1000);
  EXPECT_EQ(l.student_steps, 1000);
  EXPECT_EQ(reproduce_recipes(o)["cascade"].steps, 500);
  o.n_seeds = 2;  // an explicit --seeds wins
  EXPECT_EQ(with_preset(o).n_seeds, 2);

  // paper: 160k steps with the drop at 75 %; the cascade 500 epochs of the labelled set at
  // batch 4 (20 cases: 5 steps an epoch).
  o = ReproduceOptions{};
  o.preset = "paper";
  auto r = reproduce_recipes(o);
  EXPECT_EQ(r["unet"].steps, 160000);
  EXPECT_EQ(r["resunet-vae"].schedule, "step");
  EXPECT_EQ(r["cascade"].steps, 2500);
  EXPECT_EQ(r["cascade"].batch, 4);
  EXPECT_EQ(r["cascade"].schedule, "exp");
}

TEST(ExperimentTeachers, ParsesNamesAndCounts) {
  const std::vector<std::string> recipes{"cascade", "resunet", "resunet-vae", "student", "unet"};
  auto t = parse_teachers("unet,resunet-vae,cascade", recipes);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].name, "unet");
  EXPECT_EQ(t[1].arch, "resunet-vae");
  EXPECT_EQ(t[2].instance, 0);

  t = parse_teachers("student:3", recipes);
  ASSERT_EQ(t.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(t[k].arch, "student");
    EXPECT_EQ(t[k].name, "student-" + std::to_string(k + 1));
    EXPECT_EQ(t[k].instance, k);
  }
  // A recipe named twice counts on: folders stay distinct.
  t = parse_teachers("unet,cascade,unet", recipes);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].name, "unet-1");
  EXPECT_EQ(t[1].name, "cascade");
  EXPECT_EQ(t[2].name, "unet-2");
  EXPECT_EQ(t[2].instance, 1);

  // Seeds: s + 1000 k, and one step further for the student architecture, whose first member
  // would otherwise train exactly as the control (seed s) does.
  EXPECT_EQ(teacher_seed(2, t[0]), 2u);     // unet-1
  EXPECT_EQ(teacher_seed(2, t[2]), 1002u);  // unet-2
  t = parse_teachers("student:2", recipes);
  EXPECT_EQ(teacher_seed(2, t[0]), 1002u);
  EXPECT_EQ(teacher_seed(2, t[1]), 2002u);

  for (const char* bad : {"", "vnet", "student:0", "student:x", "student:", "unet,,cascade"})
    EXPECT_THROW(parse_teachers(bad, recipes), Error) << bad;
}

TEST(ExperimentRegime, DataLimitedOnlyWhenTheOracleIntervalIsAboveZero) {
  PairedComparison oc;
  oc.a = "oracle";
  oc.b = "control";
  oc.diff = 0.15;
  oc.ci95_seeds = {0.09, 0.21};
  oc.p_holm = 0.004;
  RatioEstimate share{0.4, {0.1, 0.7}};
  Regime r = judge_regime(oc, share);
  EXPECT_TRUE(r.data_limited);
  EXPECT_DOUBLE_EQ(r.share.value, 0.4);
  EXPECT_NE(r.sentence.find("data-limited"), std::string::npos) << r.sentence;
  EXPECT_NE(r.sentence.find("40 %"), std::string::npos) << r.sentence;
  EXPECT_EQ(r.sentence.find("thin"), std::string::npos) << r.sentence;
  // Above 0 on its own interval, but not after the table's Holm adjustment: said so.
  oc.p_holm = 0.43;
  r = judge_regime(oc, share);
  EXPECT_TRUE(r.data_limited);
  EXPECT_NE(r.sentence.find("The margin is thin"), std::string::npos) << r.sentence;
  EXPECT_NE(r.sentence.find("p is 0.43"), std::string::npos) << r.sentence;

  oc.diff = 0.02;
  oc.ci95_seeds = {-0.01, 0.05};
  r = judge_regime(oc, share);
  EXPECT_FALSE(r.data_limited);
  EXPECT_TRUE(std::isnan(r.share.value));
  EXPECT_NE(r.sentence.find("budget-limited"), std::string::npos) << r.sentence;
  EXPECT_NE(r.sentence.find("--preset long"), std::string::npos) << r.sentence;
}

}  // namespace
}  // namespace kdseg

namespace kdseg {
namespace {

TEST(ExperimentPlan, ProbePatchIsBoundedAndKeepsTheStride) {
  // Small patches are timed as they are.
  EXPECT_EQ(probe_patch({48, 48, 48}, 8), (std::array<int64_t, 3>{48, 48, 48}));
  EXPECT_EQ(probe_patch({64, 64, 64}, 16), (std::array<int64_t, 3>{64, 64, 64}));
  // The paper's patches: one factor on every side, at most 64³ voxels, multiples of the stride.
  EXPECT_EQ(probe_patch({144, 144, 128}, 16), (std::array<int64_t, 3>{64, 64, 48}));
  EXPECT_EQ(probe_patch({128, 128, 128}, 32), (std::array<int64_t, 3>{64, 64, 64}));
  const auto thin = probe_patch({512, 512, 8}, 8);
  EXPECT_LE(thin[0] * thin[1] * thin[2], 64 * 64 * 64);
  EXPECT_EQ(thin[2], 8) << "never below one stride";
}

}  // namespace
}  // namespace kdseg
