// The losses against values worked out by hand on tiny tensors (1×3×2×2×2 and friends).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "kdseg/models/net.h"
#include "kdseg/train/loss.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

double value(const at::Tensor& t) {
  return t.item<double>();
}

// Region 0 all inside, region 1 half inside (x = 0 plane), region 2 empty; 1×3×2×2×2.
at::Tensor three_regions() {
  at::Tensor g = torch::zeros({1, 3, 2, 2, 2});
  g.select(1, 0).fill_(1);
  g.select(1, 1).select(1, 0).fill_(1);
  return g;
}

TEST(Loss, DiceAndBceAtHalfProbabilityByHand) {
  const at::Tensor logits = torch::zeros({1, 3, 2, 2, 2});  // p = 0.5 everywhere
  const at::Tensor g = three_regions();
  // Σpg = 4, 2, 0; Σp² = 2; Σg² = 8, 4, 0 → dice 8/10, 4/6, 0 (ε = 0).
  const double dice = 1.0 - (0.8 + 4.0 / 6.0 + 0.0) / 3.0;
  EXPECT_NEAR(value(soft_dice_loss(logits, g, {}, false, 0.0)), dice, 1e-6);
  // With ε = 1e-5: region 2 becomes ε/(2 + ε).
  const double eps = 1e-5;
  const double dice_eps =
      1.0 - ((8 + eps) / (10 + eps) + (4 + eps) / (6 + eps) + eps / (2 + eps)) / 3;
  EXPECT_NEAR(value(soft_dice_loss(logits, g)), dice_eps, 1e-6);
  // Every voxel costs ln 2 in every region; voxel mean per region, summed over the 3 regions.
  EXPECT_NEAR(value(bce_loss(logits, g)), 3 * std::log(2.0), 1e-6);
  LossTerms t = dice_bce_loss(logits, g);
  EXPECT_NEAR(value(t.total), dice_eps + 3 * std::log(2.0), 1e-6);
}

TEST(Loss, HardOverlapCountsByHand) {
  // 1 sample, 3 regions, 4 voxels. WT: predicted 2 (logit > 0), 1 of them right, 2 true;
  // TC: nothing predicted, 1 true; ET: 1 predicted, none true.
  at::Tensor logits = torch::tensor({2.f, 1.f, -1.f, -3.f,    //
                                     -1.f, -1.f, -2.f, -5.f,  //
                                     -1.f, -1.f, 0.5f, -1.f})
                          .view({1, 3, 4});
  at::Tensor target = torch::tensor({1.f, 0.f, 1.f, 0.f,    //
                                     0.f, 0.f, 0.9f, 0.f,   //
                                     0.f, 0.f, 0.4f, 0.f})  // soft: 0.4 is not a target voxel
                          .view({1, 3, 4});
  at::Tensor c = hard_overlap_counts(logits, target);
  EXPECT_TRUE(torch::equal(
      c, torch::tensor({1., 2., 2., 0., 0., 1., 0., 1., 0.}, at::kDouble).view({3, 3})))
      << c;
  // Voxels of weight 0 do not count: the first voxel out.
  at::Tensor w = torch::tensor({0.f, 1.f, 1.f, 1.f}).view({1, 1, 4});
  c = hard_overlap_counts(logits, target, w);
  EXPECT_EQ(c[0][0].item<double>(), 0);
  EXPECT_EQ(c[0][1].item<double>(), 1);
  EXPECT_EQ(c[0][2].item<double>(), 1);
  EXPECT_THROW(hard_overlap_counts(logits, target.view({1, 12})), Error);
}

TEST(Loss, SoftTargetsByHand) {
  // p = 0.75 everywhere (logit ln 3), target probability 0.25 everywhere (8 voxels, 1 region).
  const at::Tensor logits = torch::full({1, 1, 2, 2, 2}, std::log(3.0));
  const at::Tensor g = torch::full({1, 1, 2, 2, 2}, 0.25);
  // Σpg = 1.5, Σp² = 4.5, Σg² = 0.5 → dice 3/5.
  EXPECT_NEAR(value(soft_dice_loss(logits, g, {}, false, 0.0)), 0.4, 1e-6);
  const double bce = -(0.25 * std::log(0.75) + 0.75 * std::log(0.25));
  EXPECT_NEAR(value(bce_loss(logits, g)), bce, 1e-6);
  // A soft target's own probabilities are the BCE minimum: the gradient there is zero.
  at::Tensor at_target = torch::full({1, 1, 2, 2, 2}, std::log(0.25 / 0.75)).requires_grad_();
  bce_loss(at_target, g).backward();
  EXPECT_LT(at_target.grad().abs().max().item<double>(), 1e-7);
}

// The formulas written as loops, for random tensors.
struct Reference {
  double dice_per_sample = 0, dice_batch = 0, bce = 0;
};
Reference reference(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight,
                    double eps) {
  const int64_t B = logits.size(0), C = logits.size(1), N = logits[0][0].numel();
  auto p = torch::sigmoid(logits).to(torch::kDouble).reshape({B, C, N});
  auto g = target.to(torch::kDouble).reshape({B, C, N});
  auto w = weight.to(torch::kDouble).expand_as(logits).reshape({B, C, N});
  auto P = p.accessor<double, 3>(), G = g.accessor<double, 3>(), W = w.accessor<double, 3>();
  Reference r;
  for (int64_t c = 0; c < C; ++c) {
    double bpg = 0, bp2 = 0, bg2 = 0, bce = 0, wsum = 0;
    for (int64_t b = 0; b < B; ++b) {
      double pg = 0, p2 = 0, g2 = 0;
      for (int64_t i = 0; i < N; ++i) {
        pg += W[b][c][i] * P[b][c][i] * G[b][c][i];
        p2 += W[b][c][i] * P[b][c][i] * P[b][c][i];
        g2 += W[b][c][i] * G[b][c][i] * G[b][c][i];
        bce -= W[b][c][i] *
               (G[b][c][i] * std::log(P[b][c][i]) + (1 - G[b][c][i]) * std::log(1 - P[b][c][i]));
        wsum += W[b][c][i];
      }
      r.dice_per_sample += (1 - (2 * pg + eps) / (p2 + g2 + eps)) / static_cast<double>(B * C);
      bpg += pg, bp2 += p2, bg2 += g2;
    }
    r.dice_batch += (1 - (2 * bpg + eps) / (bp2 + bg2 + eps)) / static_cast<double>(C);
    r.bce += bce / wsum;
  }
  return r;
}

TEST(Loss, PerSampleAndBatchDiceAndWeightsMatchTheFormulas) {
  torch::manual_seed(11);
  const at::Tensor logits = 2 * torch::randn({2, 3, 2, 3, 2});
  const at::Tensor g = torch::rand({2, 3, 2, 3, 2});  // soft targets
  const at::Tensor ones = torch::ones({2, 1, 2, 3, 2});
  const at::Tensor weight = torch::rand({2, 1, 2, 3, 2}) + 0.1;
  for (const at::Tensor& w : {ones, weight}) {
    const Reference r = reference(logits, g, w, 1e-5);
    EXPECT_NEAR(value(soft_dice_loss(logits, g, w, false)), r.dice_per_sample, 1e-5);
    EXPECT_NEAR(value(soft_dice_loss(logits, g, w, true)), r.dice_batch, 1e-5);
    EXPECT_NEAR(value(bce_loss(logits, g, w)), r.bce, 1e-5);
  }
  // No weight = all ones.
  EXPECT_NEAR(value(soft_dice_loss(logits, g)), value(soft_dice_loss(logits, g, ones)), 1e-6);
  EXPECT_NEAR(value(bce_loss(logits, g)), value(bce_loss(logits, g, ones)), 1e-6);
}

TEST(Loss, VoxelsWithWeightZeroAreExcluded) {
  torch::manual_seed(5);
  at::Tensor logits = torch::randn({1, 3, 2, 2, 4});
  at::Tensor g = (torch::rand({1, 3, 2, 2, 4}) > 0.5).to(torch::kFloat);
  at::Tensor mask = torch::zeros({1, 1, 2, 2, 4});
  mask.narrow(4, 0, 2).fill_(1);  // keep W = 0, 1
  const at::Tensor kept_logits = logits.narrow(4, 0, 2), kept_g = g.narrow(4, 0, 2);
  const double dice = value(soft_dice_loss(kept_logits, kept_g));
  const double bce = value(bce_loss(kept_logits, kept_g));
  // Whatever the ignored voxels hold changes nothing.
  for (int trial = 0; trial < 2; ++trial) {
    logits.narrow(4, 2, 2).normal_(0, 5);
    g.narrow(4, 2, 2).fill_(trial);
    EXPECT_NEAR(value(soft_dice_loss(logits, g, mask)), dice, 1e-6);
    EXPECT_NEAR(value(bce_loss(logits, g, mask)), bce, 1e-6);
  }
  // A region with every voxel ignored contributes 0 BCE and 0 Dice loss (ε/ε).
  at::Tensor none = torch::zeros({1, 3, 2, 2, 4});
  EXPECT_NEAR(value(bce_loss(logits, g, none)), 0.0, 1e-9);
  EXPECT_NEAR(value(soft_dice_loss(logits, g, none)), 0.0, 1e-9);
}

TEST(Loss, EmptyTargetsGiveFiniteGradients) {
  at::Tensor logits = torch::full({1, 3, 2, 2, 2}, -20.0).requires_grad_();
  at::Tensor g = torch::zeros({1, 3, 2, 2, 2});
  LossTerms t = dice_bce_loss(logits, g);
  t.total.backward();
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
  EXPECT_LT(value(t.dice), 1e-2);  // empty prediction of an empty region ≈ perfect
}

TEST(Loss, VaeTermsByHand) {
  const at::Tensor input = torch::randn({2, 4, 2, 2, 2});
  EXPECT_NEAR(value(vae_l2_loss(input + 0.5, input)), 0.25, 1e-6);
  const at::Tensor mu0 = torch::zeros({2, 8}), logvar0 = torch::zeros({2, 8});
  EXPECT_NEAR(value(vae_kl_loss(mu0, logvar0, 32)), 0.0, 1e-9);  // the prior itself
  // μ = 1, σ² = 1: each of 8 latents adds 1 + 1 − 0 − 1 = 1 → 8 / N, N = 4·2·2·2 = 32.
  EXPECT_NEAR(value(vae_kl_loss(torch::ones({2, 8}), logvar0, 32)), 8.0 / 32, 1e-6);
  // μ = 0, log σ² = ln 2: 0 + 2 − ln 2 − 1 per latent.
  const at::Tensor logvar = torch::full({2, 8}, std::log(2.0));
  EXPECT_NEAR(value(vae_kl_loss(mu0, logvar, 32)), 8 * (1 - std::log(2.0)) / 32, 1e-6);

  SegOutput out;
  out.logits = torch::zeros({2, 3, 2, 2, 2});
  out.recon = input + 0.5;
  out.mu = torch::ones({2, 8});
  out.logvar = logvar0;
  const at::Tensor g = torch::zeros({2, 3, 2, 2, 2});
  LossOptions opt;
  LossTerms t = segmentation_loss(out, g, input, {}, opt);
  EXPECT_NEAR(value(t.vae_l2), 0.25, 1e-6);
  EXPECT_NEAR(value(t.vae_kl), 0.25, 1e-6);
  EXPECT_NEAR(value(t.total), value(dice_bce_loss(out.logits, g).total) + 0.1 * 0.25 + 0.1 * 0.25,
              1e-6);
}

TEST(Loss, TargetsAreAveragePooledForCoarseOutputs) {
  at::Tensor g = torch::zeros({1, 1, 2, 2, 2});
  g[0][0][0][0][0] = 1;
  g[0][0][1][1][1] = 1;
  at::Tensor coarse = downsample_to(g, {1, 1, 1});
  EXPECT_EQ(coarse.sizes(), (std::vector<int64_t>{1, 1, 1, 1, 1}));
  EXPECT_NEAR(value(coarse.flatten()[0]), 0.25, 1e-7);
  EXPECT_TRUE(torch::equal(downsample_to(g, {2, 2, 2}), g));
  EXPECT_THROW(downsample_to(g, {3, 2, 2}), Error);
}

TEST(Loss, DeepSupervisionWeightsCoarseToFine) {
  torch::manual_seed(9);
  const at::Tensor g = (torch::rand({1, 3, 8, 8, 8}) > 0.6).to(torch::kFloat);
  SegOutput out;
  out.deep = {torch::randn({1, 3, 2, 2, 2}), torch::randn({1, 3, 4, 4, 4})};  // 1/4, 1/2
  out.logits = torch::randn({1, 3, 8, 8, 8});
  const double expected =
      0.2 * value(dice_bce_loss(out.deep[0], downsample_to(g, {2, 2, 2})).total) +
      0.3 * value(dice_bce_loss(out.deep[1], downsample_to(g, {4, 4, 4})).total) +
      0.4 * value(dice_bce_loss(out.logits, g).total);
  LossTerms t = segmentation_loss(out, g, {});
  EXPECT_NEAR(value(t.total), expected, 1e-5);
  EXPECT_NEAR(value(t.total), value(t.dice) + value(t.bce), 1e-5);
  EXPECT_FALSE(t.vae_l2.defined());
  // A single output has weight 1, whatever the deep-supervision weights.
  SegOutput single;
  single.logits = out.logits;
  EXPECT_NEAR(value(segmentation_loss(single, g, {}).total),
              value(dice_bce_loss(out.logits, g).total), 1e-6);
  LossOptions two;
  two.deep_supervision = {0.5, 1.0};
  EXPECT_THROW(segmentation_loss(out, g, {}, {}, two), Error);
}

TEST(Loss, ShapeMismatchIsAnError) {
  EXPECT_THROW(soft_dice_loss(torch::zeros({1, 3, 2, 2, 2}), torch::zeros({1, 2, 2, 2, 2})), Error);
  EXPECT_THROW(bce_loss(torch::zeros({1, 3, 2, 2, 2}), torch::zeros({1, 3, 2, 2, 4})), Error);
}

}  // namespace
}  // namespace kdseg
