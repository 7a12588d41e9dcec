#include "kdseg/train/mean_teacher.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "kdseg/data/random.h"
#include "kdseg/util/error.h"

namespace kdseg {

void validate_mean_teacher(const MeanTeacherOptions& o) {
  if (!(o.weight >= 0) || !std::isfinite(o.weight))
    throw Error("--mt-weight", "must be a number ≥ 0", "e.g. --mt-weight 1");
  if (!(o.ema >= 0 && o.ema < 1)) throw Error("--mt-ema", "must be in [0, 1)", "e.g. 0.99");
  if (!(o.threshold >= 0.5 && o.threshold < 1))
    throw Error("--mt-threshold", "must be in [0.5, 1): a confidence max(p, 1 - p)", "e.g. 0.9");
  if (!(o.rampup >= 0 && o.rampup <= 1)) throw Error("--mt-rampup", "must be in [0, 1]");
  if (o.batch < 0) throw Error("--mt-batch", "must be ≥ 0 (0 = the run's --batch)");
  const auto& s = o.strong;
  if (!(s.noise_sd >= 0)) throw Error("--mt-noise", "must be ≥ 0");
  if (!(s.contrast[0] > 0 && s.contrast[0] <= s.contrast[1]))
    throw Error("--mt-contrast", "must be lo,hi with 0 < lo ≤ hi", "e.g. 0.7,1.3");
  if (!(s.shift >= 0)) throw Error("--mt-shift", "must be ≥ 0");
  if (!(s.p_cutmix >= 0 && s.p_cutmix <= 1)) throw Error("--mt-p-cutmix", "must be in [0, 1]");
  if (!(s.cutmix_side[0] > 0 && s.cutmix_side[0] <= s.cutmix_side[1] && s.cutmix_side[1] <= 1))
    throw Error("--mt-cutmix-side", "must be lo,hi with 0 < lo ≤ hi ≤ 1", "e.g. 0.25,0.5");
}

double consistency_weight(const MeanTeacherOptions& o, int64_t step, int64_t steps) {
  const double ramp = o.rampup * static_cast<double>(steps);
  if (ramp <= 0 || static_cast<double>(step) >= ramp) return o.weight;
  const double t = static_cast<double>(step) / ramp;
  return o.weight * std::exp(-5.0 * (1 - t) * (1 - t));
}

double teacher_decay(const MeanTeacherOptions& o, int64_t step) {
  return std::min(o.ema, 1.0 - 1.0 / static_cast<double>(step + 1));
}

void update_teacher(torch::nn::Module& teacher, const torch::nn::Module& student, double decay) {
  torch::NoGradGuard no_grad;
  const auto tp = teacher.named_parameters(), sp = student.named_parameters();
  const auto tb = teacher.named_buffers(), sb = student.named_buffers();
  if (tp.size() != sp.size() || tb.size() != sb.size())
    throw Error("mean teacher", "the teacher and the student are not the same network");
  for (size_t i = 0; i < tp.size(); ++i) {
    const auto& t = tp[i];
    const auto& s = sp[i];
    if (t.key() != s.key() || !t.value().sizes().equals(s.value().sizes()))
      throw Error("mean teacher", "parameter " + t.key() + " differs between teacher and student");
    t.value().mul_(decay).add_(s.value(), 1.0 - decay);
  }
  for (size_t i = 0; i < tb.size(); ++i) tb[i].value().copy_(sb[i].value());
}

StrongView strong_view(const at::Tensor& x, uint64_t key, const StrongAugmentOptions& o) {
  TORCH_CHECK(x.dim() == 5, "strong_view: a (B,C,D,H,W) batch");
  const int64_t B = x.size(0), C = x.size(1);
  data::CounterRng rng(key);
  auto uniform = [&rng](double lo, double hi) { return rng.uniform(lo, hi); };
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(rng.next());
  const at::Tensor img = x.to(at::kFloat).contiguous();
  const at::Tensor brain = img.ne(0).any(1, /*keepdim=*/true).to(at::kFloat);  // (B,1,...)
  std::vector<float> factor(static_cast<size_t>(B * C)), offset(static_cast<size_t>(B * C));
  for (int64_t i = 0; i < B * C; ++i) {
    factor[static_cast<size_t>(i)] = static_cast<float>(uniform(o.contrast[0], o.contrast[1]));
    offset[static_cast<size_t>(i)] = static_cast<float>(uniform(-o.shift, o.shift));
  }
  const at::Tensor f = torch::tensor(factor).view({B, C, 1, 1, 1}),
                   s = torch::tensor(offset).view({B, C, 1, 1, 1});
  at::Tensor out = img * f + s;
  if (o.noise_sd > 0) out = out + at::randn(img.sizes(), gen, img.options()) * o.noise_sd;
  out = out * brain;  // background stays background

  at::Tensor mixed = torch::zeros({B, 1, img.size(2), img.size(3), img.size(4)});
  if (B > 1)
    for (int64_t b = 0; b < B; ++b) {
      if (uniform(0, 1) >= o.p_cutmix) continue;
      std::array<int64_t, 3> lo{}, side{};
      for (int a = 0; a < 3; ++a) {
        const int64_t n = img.size(2 + a);
        side[a] = std::clamp<int64_t>(
            std::llround(uniform(o.cutmix_side[0], o.cutmix_side[1]) * static_cast<double>(n)), 1,
            n);
        lo[a] = std::min<int64_t>(
            static_cast<int64_t>(uniform(0, 1) * static_cast<double>(n - side[a] + 1)),
            n - side[a]);
      }
      using torch::indexing::Slice;
      mixed.index_put_({b, 0, Slice(lo[0], lo[0] + side[0]), Slice(lo[1], lo[1] + side[1]),
                        Slice(lo[2], lo[2] + side[2])},
                       1.0);
    }
  return {mix_like(out, mixed), mixed};
}

at::Tensor mix_like(const at::Tensor& t, const at::Tensor& mixed) {
  const at::Tensor m = mixed.to(t.device(), t.scalar_type());
  return t * (1 - m) + t.roll({-1}, {0}) * m;  // position b takes sample b + 1's box
}

ConsistencyTargets consistency_targets(const at::Tensor& teacher_logits, double threshold) {
  const at::Tensor p = torch::sigmoid(teacher_logits.detach().to(at::kFloat));
  ConsistencyTargets c;
  c.target = p.gt(0.5).to(at::kFloat);
  c.weight = torch::max(p, 1 - p).ge(threshold).to(at::kFloat);
  return c;
}

}  // namespace kdseg
