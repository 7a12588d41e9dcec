#include "kdseg/data/sampler.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "kdseg/data/random.h"
#include "kdseg/util/error.h"

namespace kdseg {
namespace {

std::string shape_str(const std::array<int64_t, 3>& s) {
  return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
}

std::array<int64_t, 3> point_at(const at::Tensor& points, int64_t row) {
  const int16_t* p = points.data_ptr<int16_t>() + 3 * row;
  return {p[0], p[1], p[2]};
}

}  // namespace

int64_t corner_containing(int64_t point, int64_t size, int64_t patch, double u) {
  int64_t lo = std::min<int64_t>(0, size - patch), hi = std::max<int64_t>(0, size - patch);
  lo = std::max(lo, point - patch + 1);
  hi = std::min(hi, point);
  if (hi < lo)
    return std::clamp(point - patch / 2, std::min<int64_t>(0, size - patch),
                      std::max<int64_t>(0, size - patch));
  return lo +
         std::min<int64_t>(hi - lo, static_cast<int64_t>(u * static_cast<double>(hi - lo + 1)));
}

int64_t corner_centred(int64_t point, int64_t size, int64_t patch) {
  return std::clamp(point - patch / 2, std::min<int64_t>(0, size - patch),
                    std::max<int64_t>(0, size - patch));
}

std::array<int64_t, 3> max_patch(const CaseGeometry& g) {
  std::array<int64_t, 3> m{};
  for (int i = 0; i < 3; ++i) {
    const double full = g.box.full[i] * g.source_spacing[i] / g.spacing[i];
    m[i] = std::max<int64_t>(g.shape[i], static_cast<int64_t>(std::floor(full + 1e-6)));
  }
  return m;
}

void check_patch(const std::array<int64_t, 3>& patch, const CaseGeometry& g,
                 const std::string& where) {
  const auto m = max_patch(g);
  for (int i = 0; i < 3; ++i)
    if (patch[i] > m[i])
      throw Error(where,
                  "patch " + shape_str(patch) + " is larger than the volume (" + shape_str(m) +
                      " voxels at the plan's spacing) along axis " + "DHW"[i],
                  "use a patch of at most " + shape_str(m) +
                      " (a multiple of the network's stride), or a finer spacing");
}

Sampler::Sampler(std::vector<SamplePool> pools, SamplerOptions opt)
    : pools_(std::move(pools)), opt_(opt) {
  for (int i = 0; i < 3; ++i)
    if (opt_.patch[i] < 1)
      throw Error("--patch", "patch sizes must be >= 1, got " + shape_str(opt_.patch));
  if (opt_.batch < 1) throw Error("--batch", "batch size must be >= 1");
  if (!(opt_.foreground_share >= 0 && opt_.foreground_share <= 1))
    throw Error("--foreground-share",
                "must be in [0, 1], got " + std::to_string(opt_.foreground_share));
  if (pools_.empty()) throw Error("--data", "no training data", "pass --data DIR");
  double total = 0;
  bool first = true;
  for (const auto& p : pools_) {
    if (p.cases.empty())
      throw Error(p.name, "no training case in this data folder",
                  "check the folder and splits.json (its cases may all be validation cases)");
    if (!(p.weight > 0) || !std::isfinite(p.weight))
      throw Error(p.name, "the sampling weight must be > 0, got " + std::to_string(p.weight));
    total += p.weight;
    for (const auto& c : p.cases) {
      check_patch(opt_.patch, c->geometry(), c->id() + " (" + p.name + ")");
      if (first) n_channels_ = c->image().size(0);
      first = false;
      if (c->image().size(0) != n_channels_)
        throw Error(c->path(), "cases of one run must have the same number of channels");
      any_ignore_ = any_ignore_ || c->ignore().defined();
    }
  }
  double acc = 0;
  for (const auto& p : pools_) cumulative_.push_back(acc += p.weight / total);
  cumulative_.back() = 1.0;
}

SampleSpec Sampler::draw(int64_t step, int64_t index) const {
  data::CounterRng rng(data::sample_key(opt_.seed, step, index));
  SampleSpec s;
  s.step = step;
  s.index = index;
  const double u = rng.uniform();
  s.pool = static_cast<int64_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), u) -
                                cumulative_.begin());
  s.pool = std::min<int64_t>(s.pool, static_cast<int64_t>(pools_.size()) - 1);
  const auto& pool = pools_[s.pool];
  s.case_index = rng.below(static_cast<int64_t>(pool.cases.size()));
  const CachedCase& c = *pool.cases[s.case_index];
  const auto& shape = c.geometry().shape;
  const bool want_fg = rng.bernoulli(opt_.foreground_share);
  const double u_fg = rng.uniform(), u_brain = rng.uniform();
  const double u_axis[3] = {rng.uniform(), rng.uniform(), rng.uniform()};
  s.augment_key = rng.next();
  const at::Tensor tumour = c.tumour_points();
  if (want_fg && tumour.size(0) > 0) {
    s.foreground = true;
    const auto p = point_at(
        tumour, std::min<int64_t>(tumour.size(0) - 1, static_cast<int64_t>(u_fg * tumour.size(0))));
    for (int i = 0; i < 3; ++i) s.corner[i] = corner_centred(p[i], shape[i], opt_.patch[i]);
  } else {
    const at::Tensor brain = c.brain_points();
    const auto p = point_at(
        brain, std::min<int64_t>(brain.size(0) - 1, static_cast<int64_t>(u_brain * brain.size(0))));
    for (int i = 0; i < 3; ++i)
      s.corner[i] = corner_containing(p[i], shape[i], opt_.patch[i], u_axis[i]);
  }
  return s;
}

}  // namespace kdseg
