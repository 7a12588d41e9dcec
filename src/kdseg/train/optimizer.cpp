#include "kdseg/train/optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "kdseg/util/error.h"

namespace kdseg {

Optimizer::Optimizer(std::vector<std::pair<std::string, at::Tensor>> named, OptimizerOptions opt)
    : opt_(std::move(opt)) {
  if (opt_.kind != "adam" && opt_.kind != "sgd")
    throw Error("--optimizer", "unknown optimiser \"" + opt_.kind + "\"", "adam or sgd");
  for (auto& [name, p] : named) slots_.push_back({name, p, {}, {}});
}

void Optimizer::zero_grad() {
  for (auto& s : slots_)
    if (s.param.grad().defined()) s.param.mutable_grad() = at::Tensor();
}

void Optimizer::step(double lr) {
  torch::NoGradGuard no_grad;
  ++n_steps_;
  const double bc1 = 1 - std::pow(opt_.beta1, static_cast<double>(n_steps_));
  const double bc2 = 1 - std::pow(opt_.beta2, static_cast<double>(n_steps_));
  for (auto& s : slots_) {
    at::Tensor g = s.param.grad();
    if (!g.defined()) continue;
    if (opt_.weight_decay != 0) g = g.add(s.param, opt_.weight_decay);
    if (opt_.kind == "adam") {
      if (!s.m.defined()) {
        s.m = at::zeros_like(s.param);
        s.v = at::zeros_like(s.param);
      }
      s.m.mul_(opt_.beta1).add_(g, 1 - opt_.beta1);
      s.v.mul_(opt_.beta2).addcmul_(g, g, 1 - opt_.beta2);
      at::Tensor denom = (s.v.sqrt() / std::sqrt(bc2)).add_(opt_.eps);
      s.param.addcdiv_(s.m, denom, -lr / bc1);
    } else {
      if (opt_.momentum != 0) {
        if (!s.m.defined())
          s.m = g.clone();
        else
          s.m.mul_(opt_.momentum).add_(g);
        g = opt_.nesterov ? g.add(s.m, opt_.momentum) : s.m;
      }
      s.param.add_(g, -lr);
    }
  }
}

c10::Dict<std::string, at::Tensor> Optimizer::state() const {
  c10::Dict<std::string, at::Tensor> d;
  d.insert("n_steps", at::tensor(n_steps_, at::kLong));
  for (const auto& s : slots_) {
    if (!s.m.defined()) continue;
    if (opt_.kind == "adam") {
      d.insert("adam.exp_avg." + s.name, s.m.detach().to(at::kCPU).clone());
      d.insert("adam.exp_avg_sq." + s.name, s.v.detach().to(at::kCPU).clone());
    } else {
      d.insert("sgd.momentum." + s.name, s.m.detach().to(at::kCPU).clone());
    }
  }
  return d;
}

void Optimizer::load_state(const c10::Dict<std::string, at::Tensor>& state,
                           const std::string& where) {
  if (!state.contains("n_steps")) throw Error(where, "optimiser state without n_steps");
  n_steps_ = state.at("n_steps").item<int64_t>();
  size_t used = 1;
  for (auto& s : slots_) {
    auto get = [&](const std::string& key) -> at::Tensor {
      if (!state.contains(key)) return {};
      at::Tensor t = state.at(key);
      if (t.sizes() != s.param.sizes())
        throw Error(where, "optimiser state " + key + " has the wrong shape");
      ++used;
      return t.to(s.param.device(), s.param.scalar_type()).clone();
    };
    if (opt_.kind == "adam") {
      s.m = get("adam.exp_avg." + s.name);
      s.v = get("adam.exp_avg_sq." + s.name);
      if (s.m.defined() != s.v.defined()) throw Error(where, "incomplete Adam state of " + s.name);
    } else {
      s.m = get("sgd.momentum." + s.name);
    }
  }
  if (used != state.size())
    throw Error(where,
                "the optimiser state does not match this run (" +
                    std::to_string(state.size() - used) + " unknown entries)",
                "resume with the same model and --optimizer");
}

}  // namespace kdseg
