// Sampler, augmentation and the threaded loader, on tiny cached phantoms made in code.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <set>

#include "kdseg/data/augment.h"
#include "kdseg/data/cache.h"
#include "kdseg/data/loader.h"
#include "kdseg/data/sampler.h"
#include "kdseg/io/gzip.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A case on a (D,H,W) grid: channel 3 is an ellipsoidal "brain" (1 inside, 0 outside); channels
// 0-2 are 5 x the WT, TC and ET indicators, so the image draws the labels' geometry.
PreparedCase phantom(const std::string& id, std::array<int64_t, 3> dim,
                     std::array<double, 3> tumour_centre, double tumour_radius) {
  PreparedCase p;
  p.id = id;
  auto idx = [&](int a) {
    std::vector<int64_t> shape{1, 1, 1};
    shape[a] = dim[a];
    return torch::arange(dim[a], torch::kFloat64).view(shape);
  };
  at::Tensor x = idx(0), y = idx(1), z = idx(2);
  auto sq = [](const at::Tensor& t) { return t * t; };
  at::Tensor brain = (sq((x - (dim[0] - 1) / 2.0) / (0.45 * dim[0])) +
                      sq((y - (dim[1] - 1) / 2.0) / (0.45 * dim[1])) +
                      sq((z - (dim[2] - 1) / 2.0) / (0.45 * dim[2]))) <= 1;
  at::Tensor r =
      (sq(x - tumour_centre[0]) + sq(y - tumour_centre[1]) + sq(z - tumour_centre[2])).sqrt();
  at::Tensor labels = torch::zeros({dim[0], dim[1], dim[2]}, torch::kUInt8);
  if (tumour_radius > 0) {
    labels.masked_fill_(r <= tumour_radius, 2);
    labels.masked_fill_(r <= tumour_radius * 2 / 3, 4);
    labels.masked_fill_(r <= tumour_radius / 2, 1);
    labels.masked_fill_(brain.logical_not(), 0);
  }
  at::Tensor regions = labels_to_regions(labels);
  p.image = torch::cat({regions * 5, brain.to(torch::kFloat32).unsqueeze(0)}, 0).contiguous();
  p.labels = labels;
  p.geometry.box.full = dim;
  p.geometry.box.hi = dim;
  p.geometry.shape = dim;
  return p;
}

std::shared_ptr<const CachedCase> to_cache(const test::ScratchDir& dir, const PreparedCase& p) {
  auto bytes = encode_cached_case(p, "test", nlohmann::json::object(), nlohmann::json::array());
  const std::string path = dir.str(p.id + ".kdc");
  write_file_atomic(path, bytes.data(), bytes.size());
  return CachedCase::open(path);
}

AugmentOptions no_augment() {
  AugmentOptions a;
  a.enabled = false;
  return a;
}

std::array<int64_t, 3> argmax3(const at::Tensor& v) {
  const int64_t i = v.flatten().argmax().item<int64_t>();
  return {i / (v.size(1) * v.size(2)), (i / v.size(2)) % v.size(1), i % v.size(2)};
}

class DataSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    tumour_ = to_cache(dir_, phantom("TUM", {24, 24, 20}, {15, 8, 10}, 4));
    empty_ = to_cache(dir_, phantom("EMPTY", {24, 24, 20}, {0, 0, 0}, 0));
  }
  std::shared_ptr<Sampler> sampler(SamplerOptions o, std::vector<SamplePool> pools = {}) {
    if (pools.empty()) pools = {{"tumour", 1.0, {tumour_}}};
    return std::make_shared<Sampler>(pools, o);
  }
  test::ScratchDir dir_{"data_sampling"};
  std::shared_ptr<const CachedCase> tumour_, empty_;
};

TEST(DataSamplerMaths, CornersContainThePointAndStayInRange) {
  for (double u : {0.0, 0.3, 0.999}) {
    EXPECT_EQ(corner_containing(0, 10, 4, u), 0);
    EXPECT_EQ(corner_containing(9, 10, 4, u), 6);
    const int64_t c = corner_containing(5, 10, 4, u);
    EXPECT_TRUE(c >= 2 && c <= 5) << c;
    const int64_t pad = corner_containing(0, 4, 6, u);  // patch larger than the axis: padding
    EXPECT_TRUE(pad >= -2 && pad <= 0) << pad;
  }
  EXPECT_EQ(corner_containing(5, 10, 4, 0.0), 2);
  EXPECT_EQ(corner_containing(5, 10, 4, 0.999), 5);
  EXPECT_EQ(corner_centred(5, 10, 4), 3);
  EXPECT_EQ(corner_centred(0, 10, 4), 0);
  EXPECT_EQ(corner_centred(9, 10, 4), 6);
  EXPECT_EQ(corner_centred(1, 4, 6), -2);  // covers [-2, 4): point 1 at offset 3 = 6/2
}

TEST_F(DataSampling, SameSeedStepAndIndexGiveTheSamePatch) {
  SamplerOptions o;
  o.patch = {12, 12, 12};
  o.seed = 5;
  auto a = sampler(o), b = sampler(o);
  AugmentOptions aug;
  aug.p_rotate = 0.5;
  aug.p_scale = 0.5;
  std::set<std::array<int64_t, 3>> corners;
  for (int64_t step : {0, 1, 17, 100000}) {
    for (int64_t i = 0; i < 2; ++i) {
      SampleSpec sa = a->draw(step, i), sb = b->draw(step, i);
      EXPECT_EQ(sa.corner, sb.corner);
      EXPECT_EQ(sa.augment_key, sb.augment_key);
      corners.insert(sa.corner);
      Sample x = make_sample(a->case_of(sa), sa, o.patch, aug);
      Sample y = make_sample(b->case_of(sb), sb, o.patch, aug);
      EXPECT_TRUE(torch::equal(x.image, y.image));
      EXPECT_TRUE(torch::equal(x.target, y.target));
    }
  }
  EXPECT_GT(corners.size(), 4u) << "different steps and indices must draw different patches";
  EXPECT_NE(a->draw(0, 0).augment_key, a->draw(1, 0).augment_key);
  EXPECT_NE(a->draw(0, 0).augment_key, a->draw(0, 1).augment_key);
  o.seed = 6;
  EXPECT_NE(sampler(o)->draw(0, 0).augment_key, a->draw(0, 0).augment_key);
}

TEST_F(DataSampling, ForegroundShareIsRespectedAndForegroundPatchesHoldTumour) {
  SamplerOptions o;
  o.patch = {8, 8, 8};
  o.foreground_share = 0.33;
  auto s = sampler(o);
  int n_fg = 0;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    SampleSpec spec = s->draw(i / 2, i % 2);
    n_fg += spec.foreground;
    if (spec.foreground && i < 300) {
      Sample x = make_sample(s->case_of(spec), spec, o.patch, no_augment());
      EXPECT_GT(x.target[0].sum().item<float>(), 0) << "foreground patch without tumour";
    }
  }
  EXPECT_NEAR(static_cast<double>(n_fg) / n, 0.33, 0.03);
  o.foreground_share = 0;
  auto none = sampler(o);
  for (int i = 0; i < 200; ++i) EXPECT_FALSE(none->draw(i, 0).foreground);
}

TEST_F(DataSampling, EveryPatchHoldsBrainAndAnEmptyLabelCaseStillSamples) {
  SamplerOptions o;
  o.patch = {6, 6, 6};
  o.foreground_share = 1.0;  // asks for tumour every time: the empty case must fall back
  auto s = sampler(o, {{"empty", 1.0, {empty_}}});
  for (int i = 0; i < 300; ++i) {
    SampleSpec spec = s->draw(i, 0);
    EXPECT_FALSE(spec.foreground);
    Sample x = make_sample(s->case_of(spec), spec, o.patch, no_augment());
    EXPECT_GT(x.image[3].sum().item<float>(), 0) << "patch without brain at step " << i;
    EXPECT_EQ(x.target.sum().item<float>(), 0);
  }
}

TEST_F(DataSampling, FoldersAreMixedByWeight) {
  SamplerOptions o;
  o.patch = {8, 8, 8};
  auto s = sampler(o, {{"a", 3.0, {tumour_}}, {"b", 1.0, {empty_}}});
  int n_a = 0;
  for (int i = 0; i < 4000; ++i) n_a += s->draw(i, 0).pool == 0;
  EXPECT_NEAR(n_a / 4000.0, 0.75, 0.03);
  EXPECT_THROW(sampler(o, {{"a", 0.0, {tumour_}}}), Error);
  EXPECT_THROW(sampler(o, {{"a", 1.0, {}}}), Error);
}

TEST_F(DataSampling, PatchLargerThanTheBrainBoxIsPaddedLargerThanTheScanIsAnError) {
  // A case cropped to 24x24x20 out of a 40x40x40 scan: patch 32 pads, patch 48 is refused.
  PreparedCase p = phantom("CROPPED", {24, 24, 20}, {12, 12, 10}, 4);
  p.geometry.box.full = {40, 40, 40};
  p.geometry.box.lo = {8, 8, 10};
  p.geometry.box.hi = {32, 32, 30};
  auto c = to_cache(dir_, p);
  SamplerOptions o;
  o.patch = {32, 32, 32};
  auto s = sampler(o, {{"c", 1.0, {c}}});
  for (int i = 0; i < 20; ++i) {
    SampleSpec spec = s->draw(i, 0);
    Sample x = make_sample(*c, spec, o.patch, no_augment());
    EXPECT_EQ(x.image.sizes(), (std::vector<int64_t>{4, 32, 32, 32}));
    EXPECT_LE(spec.corner[0], 0);
    EXPECT_GE(spec.corner[0], 24 - 32);
    // Brain and tumour are all there: the padding holds only zeros.
    EXPECT_EQ(x.image[3].sum().item<float>(), p.image[3].sum().item<float>());
  }
  o.patch = {48, 16, 16};
  try {
    sampler(o, {{"c", 1.0, {c}}});
    FAIL() << "a patch larger than the scan must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("larger than the volume"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_patch({16, 16, 41}, c->geometry(), "x"), Error);
  EXPECT_NO_THROW(check_patch({40, 40, 40}, c->geometry(), "x"));
}

// ---------------------------------------------------------------- augmentation

TEST_F(DataSampling, LabelGeometryFollowsTheImageExactly) {
  // Channels 0-2 of the image are 5 x the region masks: after any transform, thresholding them
  // at 2.5 must give exactly the transformed targets.
  SamplerOptions o;
  o.patch = {14, 14, 12};
  o.foreground_share = 1.0;
  AugmentOptions aug;
  aug.p_scale = 0.7;
  aug.scale = {0.7, 1.4};
  aug.p_rotate = 0.8;
  aug.rotate_deg = {30, 30, 30};
  aug.p_shift = 0;
  aug.p_contrast = 0;
  auto s = sampler(o);
  int n_spatial = 0, n_changed = 0;
  for (int step = 0; step < 40; ++step) {
    SampleSpec spec = s->draw(step, 0);
    Sample x = make_sample(s->case_of(spec), spec, o.patch, aug);
    Sample plain = make_sample(s->case_of(spec), spec, o.patch, no_augment());
    for (int r = 0; r < 3; ++r) {
      at::Tensor from_image = (x.image[r] >= 2.5f).to(torch::kFloat32);
      EXPECT_EQ((from_image != x.target[r]).sum().item<int64_t>(), 0)
          << "step " << step << " region " << r << ": label geometry differs from the image's";
    }
    n_spatial += !draw_augment(aug, spec.augment_key, 4).spatial_identity();
    n_changed += !torch::equal(x.target, plain.target);
    EXPECT_GT(x.target[0].sum().item<float>(), 0);
  }
  EXPECT_GT(n_spatial, 20);
  EXPECT_GT(n_changed, 20) << "the transforms must actually move the labels";
}

TEST_F(DataSampling, MirrorMovesAMarkerToTheMirroredPositionAndNeverFlipsZ) {
  PreparedCase p = phantom("MARK", {20, 20, 20}, {0, 0, 0}, 0);
  p.image[0].zero_();
  p.image[0][5][7][9] = 100.f;
  auto c = to_cache(dir_, p);
  SampleSpec spec;
  spec.corner = {0, 0, 0};
  const std::array<int64_t, 3> patch{16, 16, 16};
  AugmentOptions aug;
  aug.p_scale = aug.p_rotate = aug.p_shift = aug.p_contrast = 0;
  aug.p_mirror = 1;
  Sample both = make_sample(*c, spec, patch, aug);
  EXPECT_EQ(argmax3(both.image[0]), (std::array<int64_t, 3>{10, 8, 9}));

  // One axis at a time through the resampling path: the same positions.
  at::Tensor vol = c->image().to(torch::kFloat32);
  const std::array<double, 3> centre{7.5, 7.5, 7.5};
  AugmentParams a;
  a.mirror = {true, false};
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{10, 7, 9}));
  a.mirror = {false, true};
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{5, 8, 9}));
  a.mirror = {true, true};
  const float diff =
      (affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch) - both.image)
          .abs()
          .max()
          .item<float>();
  EXPECT_LT(diff, 1e-3f) << "slicing and resampling paths must agree";

  // Random mirrors: X and Y both flip sometimes, Z never.
  aug.p_mirror = 0.5;
  std::set<int64_t> xs, ys, zs;
  for (int k = 0; k < 64; ++k) {
    spec.augment_key = static_cast<uint64_t>(k) * 7919u;
    auto m = argmax3(make_sample(*c, spec, patch, aug).image[0]);
    xs.insert(m[0]);
    ys.insert(m[1]);
    zs.insert(m[2]);
  }
  EXPECT_EQ(xs, (std::set<int64_t>{5, 10}));
  EXPECT_EQ(ys, (std::set<int64_t>{7, 8}));
  EXPECT_EQ(zs, (std::set<int64_t>{9}));
}

TEST(DataAugment, RotationAndScalingMoveAMarkerWhereTheMathsSays) {
  at::Tensor vol = torch::zeros({1, 32, 32, 32});
  vol[0][19][16][16] = 1;  // centre + 3 along D
  const std::array<double, 3> centre{16, 16, 16};
  const std::array<int64_t, 3> patch{15, 15, 15};  // centre voxel 7
  AugmentParams a;
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{10, 7, 7}));
  a.angle = {0, 0, kPi / 2};  // about W: the D-H plane turns; out(o) = vol(c + R (o - oc))
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{7, 4, 7}));
  a.angle = {kPi / 2, 0, 0};  // about D: a marker on D does not move
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{10, 7, 7}));
  a.angle = {0, 0, 0};
  a.scale = 2;  // zoom in: offsets double
  EXPECT_EQ(argmax3(affine_resample(vol, centre, spatial_matrix(a, {1, 1, 1}), patch)[0]),
            (std::array<int64_t, 3>{13, 7, 7}));
  // Identity at an integer centre is exact slicing.
  at::Tensor r = torch::rand({2, 20, 20, 20});
  at::Tensor out =
      affine_resample(r, {10, 9, 8}, spatial_matrix(AugmentParams{}, {1, 1, 1}), {9, 9, 9});
  EXPECT_TRUE(torch::allclose(out, r.slice(1, 6, 15).slice(2, 5, 14).slice(3, 4, 13), 0, 1e-5));
}

TEST(DataAugment, ResamplingMatchesGridSampleInsideAndAcrossTheBorder) {
  torch::manual_seed(11);
  const at::Tensor vol = torch::rand({5, 23, 19, 17});  // 5 channels: padded to 8 in the pass
  const std::array<int64_t, 3> patch{12, 14, 10};
  AugmentParams a;
  a.scale = 1.13;
  a.angle = {0.31, -0.22, 0.47};
  a.mirror = {true, false};
  const std::vector<std::array<double, 3>> spacings{{1, 1, 1}, {1, 1.5, 3}};
  const std::vector<std::array<double, 3>> centres{{11.3, 9.2, 8.7},   // inside
                                                   {2.4, 16.8, 1.1}};  // mostly outside
  for (const auto& sp : spacings)
    for (const auto& c : centres) {
      const auto m = spatial_matrix(a, sp);
      const at::Tensor ours = affine_resample(vol, c, m, patch);
      const at::Tensor ref = affine_resample_grid_sample(vol, c, m, patch);
      ASSERT_EQ(ours.sizes(), ref.sizes());
      EXPECT_LT((ours - ref).abs().max().item<float>(), 1e-5f)
          << "spacing " << sp[1] << ", centre " << c[0];
      EXPECT_GT(ref.abs().sum().item<float>(), 1.f);  // not a patch of zeros
      // Outside the volume the samples are 0, as grid_sample's zero padding gives.
      EXPECT_EQ((ours == 0).sum().item<int64_t>(), (ref == 0).sum().item<int64_t>());
    }
  // Single-channel and 13-channel stacks (one pass of 4, two passes of 12 + 1).
  for (int64_t k : {1, 13}) {
    const at::Tensor v = torch::rand({k, 16, 16, 16});
    const auto m = spatial_matrix(a, {1, 1, 1});
    EXPECT_LT((affine_resample(v, {7.5, 8.2, 6.9}, m, {9, 9, 9}) -
               affine_resample_grid_sample(v, {7.5, 8.2, 6.9}, m, {9, 9, 9}))
                  .abs()
                  .max()
                  .item<float>(),
              1e-5f)
        << k << " channels";
  }
}

TEST(DataAugment, DrawsDependOnlyOnTheKeyAndIntensityKeepsBackgroundZero) {
  AugmentOptions o;
  AugmentParams a = draw_augment(o, 42, 4), b = draw_augment(o, 42, 4);
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.shift, b.shift);
  EXPECT_EQ(a.mirror, b.mirror);
  // Switching scaling off leaves the other draws alone.
  AugmentOptions off = o;
  off.p_scale = 0;
  AugmentParams c = draw_augment(off, 42, 4);
  EXPECT_EQ(c.scale, 1.0);
  EXPECT_EQ(c.angle, a.angle);
  EXPECT_EQ(c.contrast, a.contrast);
  AugmentOptions bad;
  bad.p_mirror = 1.5;
  EXPECT_THROW(validate_augment(bad), Error);
}

TEST_F(DataSampling, IntensityAugmentationIsPerModalityAndKeepsBackgroundZero) {
  SamplerOptions o;
  o.patch = {16, 16, 16};
  auto s = sampler(o);
  AugmentOptions aug;
  aug.p_scale = aug.p_rotate = aug.p_mirror = 0;
  for (int step = 0; step < 5; ++step) {
    SampleSpec spec = s->draw(step, 0);
    Sample x = make_sample(*tumour_, spec, o.patch, aug);
    Sample plain = make_sample(*tumour_, spec, o.patch, no_augment());
    at::Tensor bg = plain.image[3] == 0;
    EXPECT_EQ(x.image[3].masked_select(bg).abs().sum().item<float>(), 0);
    const auto p = draw_augment(aug, spec.augment_key, 4);
    at::Tensor brain = plain.image[3] != 0;
    EXPECT_NEAR(x.image[3].masked_select(brain).mean().item<double>(), p.contrast[3] + p.shift[3],
                1e-5);
  }
}

// ---------------------------------------------------------------- loader

TEST_F(DataSampling, LoaderBatchKIsTheSameWithAnyNumberOfWorkersAndAfterAResume) {
  SamplerOptions o;
  o.patch = {12, 12, 12};
  o.batch = 2;
  auto s = sampler(o, {{"a", 1.0, {tumour_, empty_}}});
  AugmentOptions aug;
  aug.p_rotate = 0.5;
  aug.p_scale = 0.5;
  std::vector<Batch> ref;
  for (int64_t k = 0; k < 6; ++k) ref.push_back(make_batch(*s, aug, k));
  EXPECT_EQ(ref[0].image.sizes(), (std::vector<int64_t>{2, 4, 12, 12, 12}));
  EXPECT_EQ(ref[0].target.sizes(), (std::vector<int64_t>{2, 3, 12, 12, 12}));
  EXPECT_FALSE(ref[0].weight.defined());
  EXPECT_FALSE(torch::equal(ref[0].image, ref[1].image));
  for (int workers : {0, 1, 2}) {
    LoaderOptions lo;
    lo.workers = workers;
    lo.prefetch = 2;
    Loader loader(s, aug, lo);
    for (int64_t k = 0; k < 6; ++k) {
      Batch b = loader.next();
      EXPECT_EQ(b.step, k);
      EXPECT_TRUE(torch::equal(b.image, ref[k].image)) << workers << " workers, batch " << k;
      EXPECT_TRUE(torch::equal(b.target, ref[k].target)) << workers << " workers, batch " << k;
    }
    EXPECT_GE(loader.wait_seconds(), 0.0);
    EXPECT_EQ(loader.next_step(), 6);
  }
  LoaderOptions lo;
  Loader resumed(s, aug, lo, /*first_step=*/3);
  EXPECT_TRUE(torch::equal(resumed.next().image, ref[3].image));
  EXPECT_TRUE(torch::equal(resumed.next().image, ref[4].image));
}

// Overwrites the stack below the caller, as the next calls after a constructor returns do.
[[gnu::noinline]] void scribble_stack() {
  volatile char junk[64 * 1024];
  for (size_t i = 0; i < sizeof junk; ++i) junk[i] = static_cast<char>(i * 131);
}

TEST_F(DataSampling, LoaderStartsAndStopsCleanlyManyTimes) {
  // The workers tell the constructor they have started through its local mutex, counter and
  // condition variable; none may touch them once the constructor has returned (one worker used to
  // notify after unlocking: under load, a crash soon after a loader started).
  SamplerOptions o;
  o.patch = {8, 8, 8};
  o.batch = 1;
  auto s = sampler(o, {{"a", 1.0, {tumour_, empty_}}});
  AugmentOptions aug;
  for (int i = 0; i < 300; ++i) {
    LoaderOptions lo;
    lo.workers = 6;
    lo.prefetch = 1;
    auto loader = std::make_unique<Loader>(s, aug, lo);
    scribble_stack();
    ASSERT_EQ(loader->next().step, 0) << "start " << i;
  }
}

TEST_F(DataSampling, RanksSplitTheGlobalBatch) {
  SamplerOptions two;
  two.patch = {10, 10, 10};
  two.batch = 2;
  SamplerOptions one = two;
  one.batch = 1;
  auto s2 = sampler(two), s1 = sampler(one);
  AugmentOptions aug;
  for (int64_t step : {0, 9}) {
    Batch global = make_batch(*s2, aug, step);
    Batch r0 = make_batch(*s1, aug, step, 0), r1 = make_batch(*s1, aug, step, 1);
    EXPECT_TRUE(torch::equal(global.image[0], r0.image[0]));
    EXPECT_TRUE(torch::equal(global.image[1], r1.image[0]));
  }
}

TEST_F(DataSampling, IgnoreMasksBecomeLossWeights) {
  PreparedCase p = phantom("IGN", {20, 20, 20}, {10, 10, 10}, 4);
  p.ignore = torch::zeros({20, 20, 20}, torch::kUInt8);
  p.ignore.slice(0, 0, 10).fill_(1);
  auto c = to_cache(dir_, p);
  SamplerOptions o;
  o.patch = {20, 20, 20};
  auto s = sampler(o, {{"p", 1.0, {c}}, {"l", 1.0, {tumour_}}});
  EXPECT_TRUE(s->any_ignore());
  bool seen = false;
  for (int64_t step = 0; step < 8 && !seen; ++step) {
    Batch b = make_batch(*s, no_augment(), step);
    if (!b.weight.defined()) continue;
    for (int64_t i = 0; i < 2; ++i) {
      if (b.samples[i].pool != 0) {
        EXPECT_EQ(b.weight[i].min().item<float>(), 1.f);
        continue;
      }
      seen = true;
      EXPECT_EQ(b.weight[i].sum().item<float>(), 10 * 20 * 20);
      EXPECT_EQ(b.weight[i][0][0].sum().item<float>(), 0);
    }
  }
  EXPECT_TRUE(seen);
}

}  // namespace
}  // namespace kdseg
