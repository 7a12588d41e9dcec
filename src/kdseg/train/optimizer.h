#pragma once
// The optimisers of the paper (Adam; SGD with momentum), written out so that their whole state is
// a dict of named tensors that goes into last.pt and comes back bit for bit on --resume. The
// update rules are LibTorch's (torch.optim.Adam / SGD, weight decay as L2).
#include <ATen/core/Dict.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kdseg {

struct OptimizerOptions {
  std::string kind = "adam";                      // adam or sgd
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam
  double momentum = 0.9;                          // SGD, e.g. 0.99 (nnU-Net)
  bool nesterov = false;                          // SGD
  double weight_decay = 0;                        // L2, e.g. 1e-5
};

class Optimizer {
 public:
  // named: the module's parameters under their dotted names (the state's keys).
  Optimizer(std::vector<std::pair<std::string, at::Tensor>> named, OptimizerOptions opt);

  void zero_grad();
  // One update with learning rate `lr` from the parameters' .grad() (undefined grads skipped).
  void step(double lr);
  int64_t n_steps() const { return n_steps_; }

  // "adam.exp_avg.<name>", "adam.exp_avg_sq.<name>", "sgd.momentum.<name>", "n_steps" (CPU).
  c10::Dict<std::string, at::Tensor> state() const;
  // Restores state(); every entry must match the parameters (names, shapes, kind). Throws
  // kdseg::Error naming `where`.
  void load_state(const c10::Dict<std::string, at::Tensor>& state, const std::string& where);

 private:
  struct Slot {
    std::string name;
    at::Tensor param, m, v;  // m: Adam first moment / SGD momentum buffer; v: Adam second moment
  };
  std::vector<Slot> slots_;
  OptimizerOptions opt_;
  int64_t n_steps_ = 0;
};

}  // namespace kdseg
