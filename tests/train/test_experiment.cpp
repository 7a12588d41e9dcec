// The pure parts of `kdseg reproduce`: the presets' recipes with their overrides, and the paired
// bootstrap behind the verdicts.
#include <gtest/gtest.h>

#include <cmath>

#include "kdseg/pipeline/reproduce.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(ExperimentRecipes, CpuPresetSizesAndOverrides) {
  ReproduceOptions o;  // preset cpu
  auto r = reproduce_recipes(o);
  ASSERT_EQ(r.size(), 4u);
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

TEST(ExperimentStatistics, PairedBootstrapFindsAShiftAndNotNoise) {
  // b = a - 0.05 exactly: every resample's mean difference is 0.05.
  std::vector<double> a, b, c;
  for (int i = 0; i < 40; ++i) {
    a.push_back(0.5 + 0.3 * std::sin(i * 1.7));
    b.push_back(a.back() - 0.05);
    // c differs from a by a zero-mean alternating +-0.1: no systematic difference.
    c.push_back(a.back() + (i % 2 ? 0.1 : -0.1));
  }
  const PairedComparison shift = paired_bootstrap(a, b, 2000, 7);
  EXPECT_NEAR(shift.diff, 0.05, 1e-12);
  EXPECT_NEAR(shift.ci95[0], 0.05, 1e-9);
  EXPECT_NEAR(shift.ci95[1], 0.05, 1e-9);
  EXPECT_EQ(shift.n_cases, 40);

  const PairedComparison noise = paired_bootstrap(a, c, 2000, 7);
  EXPECT_NEAR(noise.diff, 0.0, 1e-12);
  EXPECT_LT(noise.ci95[0], 0.0);
  EXPECT_GT(noise.ci95[1], 0.0);
  // The interval is about mean ± 1.96 sd/sqrt(n) = ± 0.031 for sd 0.1, n 40.
  EXPECT_NEAR(noise.ci95[1] - noise.ci95[0], 2 * 1.96 * 0.1 / std::sqrt(40.0), 0.015);

  // The same seed gives the same interval; the sides must match in length.
  const PairedComparison again = paired_bootstrap(a, c, 2000, 7);
  EXPECT_EQ(again.ci95, noise.ci95);
  EXPECT_THROW(paired_bootstrap(a, std::vector<double>(39, 0.5)), Error);
  EXPECT_THROW(paired_bootstrap({}, {}), Error);
}

}  // namespace
}  // namespace kdseg
