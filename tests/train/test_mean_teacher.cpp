// The mean teacher's pure parts (train/mean_teacher.h) on small tensors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "kdseg/train/mean_teacher.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

TEST(MeanTeacher, RampAndDecayFollowTheirFormulas) {
  MeanTeacherOptions o;
  o.weight = 2;
  o.rampup = 0.5;
  EXPECT_NEAR(consistency_weight(o, 0, 100), 2 * std::exp(-5.0), 1e-12);
  EXPECT_NEAR(consistency_weight(o, 25, 100), 2 * std::exp(-5.0 * 0.25), 1e-12);
  EXPECT_DOUBLE_EQ(consistency_weight(o, 50, 100), 2);
  o.rampup = 0;
  EXPECT_DOUBLE_EQ(consistency_weight(o, 0, 100), 2);
  o.ema = 0.99;
  EXPECT_DOUBLE_EQ(teacher_decay(o, 0), 0);  // the first update copies the student
  EXPECT_DOUBLE_EQ(teacher_decay(o, 3), 0.75);
  EXPECT_DOUBLE_EQ(teacher_decay(o, 999), 0.99);
  o.threshold = 0.4;
  EXPECT_THROW(validate_mean_teacher(o), Error);
}

TEST(MeanTeacher, TheTeacherMovesTowardsTheStudentByTheDecay) {
  torch::manual_seed(1);
  torch::nn::Linear teacher(3, 2), student(3, 2);
  const at::Tensor t0 = teacher->weight.detach().clone(), s0 = student->weight.detach().clone();
  update_teacher(*teacher, *student, 0.75);
  EXPECT_TRUE(at::allclose(teacher->weight, 0.75 * t0 + 0.25 * s0, 1e-6, 1e-7));
  update_teacher(*teacher, *student, 0);
  EXPECT_TRUE(at::equal(teacher->weight, student->weight));
  torch::nn::Linear other(3, 4);
  EXPECT_THROW(update_teacher(*other, *student, 0.5), Error);
}

TEST(MeanTeacher, StrongViewKeepsTheBackgroundAndIsDrawnFromItsKey) {
  torch::manual_seed(2);
  at::Tensor x = torch::randn({2, 4, 8, 8, 8});
  x.index_put_({torch::indexing::Slice(), torch::indexing::Slice(), 0}, 0);  // a background slab
  StrongAugmentOptions o;
  o.p_cutmix = 0;
  const StrongView a = strong_view(x, 7, o), b = strong_view(x, 7, o), c = strong_view(x, 8, o);
  EXPECT_TRUE(at::equal(a.image, b.image));
  EXPECT_FALSE(at::equal(a.image, c.image));
  EXPECT_FALSE(at::allclose(a.image, x));  // stronger than nothing
  EXPECT_EQ(a.image.select(2, 0).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(a.mixed.sum().item<float>(), 0.0f);
  o.p_cutmix = 1;
  const StrongView m = strong_view(x, 7, o);
  EXPECT_GT(m.mixed.select(0, 0).sum().item<float>(), 0.0f);
  // Mixing: where sample 0 is marked it shows sample 1, elsewhere itself.
  const at::Tensor t =
      torch::arange(2).view({2, 1, 1, 1, 1}).to(at::kFloat).expand({2, 1, 8, 8, 8});
  const at::Tensor mixed = mix_like(t, m.mixed);
  EXPECT_TRUE(at::equal(mixed.select(0, 0), m.mixed.select(0, 0)));
  EXPECT_TRUE(at::equal(mixed.select(0, 1), 1 - m.mixed.select(0, 1)));
}

TEST(MeanTeacher, OnlyConfidentVoxelsBecomeTargets) {
  const at::Tensor logits = torch::tensor({3.0f, -3.0f, 0.1f, -0.1f}).view({1, 1, 1, 1, 4});
  const ConsistencyTargets c = consistency_targets(logits, 0.9);
  EXPECT_TRUE(at::equal(c.target.flatten(), torch::tensor({1.0f, 0.0f, 1.0f, 0.0f})));
  EXPECT_TRUE(at::equal(c.weight.flatten(), torch::tensor({1.0f, 1.0f, 0.0f, 0.0f})));
}

}  // namespace
}  // namespace kdseg
