#pragma once
// What every kdseg network is to the rest of kdseg (trainer, predictor, ensemble, checkpoint):
// SegNetImpl, the common base of the five architectures, and make_net, which builds one by name
// from its options JSON.
//
// Output convention: forward returns LOGITS, (B,3,D,H,W), channels WT, TC, ET (docs/design.md §1
// region order); sigmoid(logits) are the region probabilities. The losses take logits too
// (BCE-with-logits is the numerically stable form).
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdseg {

struct SegOutput {
  at::Tensor logits;             // (B,3,D,H,W) WT, TC, ET logits at the input resolution
  std::vector<at::Tensor> deep;  // cascade: coarser nets' logits, coarsest first,
                                 // e.g. (B,3,D/4,H/4,W/4), (B,3,D/2,H/2,W/2); else empty
  at::Tensor recon;              // resunet-vae in training mode: (B,4,D,H,W) reconstructed input
  at::Tensor mu, logvar;         // resunet-vae in training mode: (B,Z) latent mean, log-variance
};

class SegNetImpl : public torch::nn::Module {
 public:
  ~SegNetImpl() override = default;
  // x: (B,4,D,H,W), D/H/W multiples of stride(); throws kdseg::Error otherwise.
  virtual SegOutput forward(const at::Tensor& x) = 0;
  // "unet", "resunet", "resunet-vae", "cascade" or "student".
  virtual std::string arch() const = 0;
  // Total downsampling factor: input sizes must be multiples of it (e.g. 8 for the student).
  virtual int64_t stride() const = 0;
  // The architecture options, as make_net(arch(), options_json()) reads them.
  virtual nlohmann::json options_json() const = 0;
};
TORCH_MODULE(SegNet);

// The five names, in the order `kdseg models` lists them.
const std::vector<std::string>& arch_names();

// Builds an architecture from its options (missing keys keep their defaults; unknown keys and
// unknown names are a kdseg::Error listing what is known). Parameters are on the CPU, float32.
SegNet make_net(const std::string& arch, const nlohmann::json& options = nlohmann::json::object());

// Number of trainable parameter elements (every registered parameter: all are in use).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace kdseg
