#pragma once
// One network or an ensemble of several (architectures may differ) applied to whole cases
// (docs/design.md §2 "Prediction"): each member preprocesses the case with its own checkpoint's
// plan, predicts region probabilities with the sliding window (+ mirror TTA), puts them back on the
// case's own grid (undoing crop and resampling), and the members are averaged there, weighted.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kdseg/io/dataset.h"
#include "kdseg/models/checkpoint.h"

#include <memory>

namespace kdseg {

struct InferenceOptions {
  std::string tta = "xy";       // mirror TTA: none, xy (the authors' 4 flips) or all (8)
  bool fuse_tta = false;        // the flips of a window in one batch (memory for speed)
  double overlap = 0.5;         // sliding-window overlap, e.g. 0.25
  std::string window = "auto";  // "auto" (whole when the padded crop has at most
                                // kAutoWholeVoxels voxels, else plan), "plan" (the checkpoint's
                                // patch), "whole" (the whole crop in one window) or "DxHxW",
                                // e.g. "128x128x128"
  int64_t window_batch = 1;     // windows per forward pass, e.g. 2
  bool bf16 = false;            // bf16 autocast for the forward passes
  bool allow_emulated_bf16 = false;  // accept --precision bf16 on a CPU without native bf16
  std::string device = "cpu";        // e.g. "cuda"
  std::string engine = "auto";       // student, unet, resunet(-vae) on a CPU: "auto" (oneDNN where
                                // it can run here, else LibTorch), "torch" or "onednn" (an error
                                // where it cannot); see infer/onednn_student.h
};

// "auto" uses one window over the whole crop up to this many voxels (8 M ≈ 200³: every 1 mm
// BraTS brain box; measured on a 2-core CPU, the plan's 144x144x128 windows at overlap 0.5 cost
// ~4x the convolutions of one whole-crop pass and give no memory back at this size), else the
// plan's windows.
constexpr int64_t kAutoWholeVoxels = 8 * 1024 * 1024;

// The window a network uses on an image of `shape` (D,H,W) under `opt.window`; multiples of
// the network's stride. Throws kdseg::Error for a malformed or misaligned "DxHxW".
std::array<int64_t, 3> resolve_window(const std::string& window, const PreprocessPlan& plan,
                                      const std::array<int64_t, 3>& shape, int64_t stride);

// Region probabilities (3,D,H,W) float32 (CPU) of `net` on a preprocessed image (C,D,H,W).
// The net must be in eval mode on opt.device.
// With `onednn`, the forward passes run through it instead of `net` (same weights).
class OneDnnNet;
at::Tensor predict_image(SegNetImpl& net, const at::Tensor& image, const PreprocessPlan& plan,
                         const InferenceOptions& opt, const OneDnnNet* onednn = nullptr);

// How `opt` runs `net`, and why: kdseg's oneDNN engine or LibTorch. Engine "auto" takes the one
// measured faster for this network, precision and CPU kind (AVX-512 or AVX2 only; the table in
// ensemble.cpp, its measurements in docs/engines.md), LibTorch wherever oneDNN cannot run it
// (the cascade, a GPU, a CPU without AVX2). Throws kdseg::Error for engine "onednn" where it
// cannot, naming why, and for an unknown engine name.
struct EngineChoice {
  bool onednn = false;
  std::string why;  // e.g. "asked for (--engine torch)", "auto: on this AVX2 (no AVX-512) CPU
                    // LibTorch measured 1.08-1.12x faster than oneDNN for the student (...)"
};
EngineChoice choose_engine(const SegNetImpl& net, const InferenceOptions& opt);
// choose_engine(net, opt).onednn
bool uses_onednn(const SegNetImpl& net, const InferenceOptions& opt);

struct EnsembleMember {
  std::string path;    // the checkpoint file
  std::string digest;  // hash of its bytes (recorded by pseudo-labelling), 16 hex digits
  double weight = 1;   // relative weight in the average
  SegNet net = nullptr;
  Checkpoint info;                    // arch, model options, plan (weights moved into `net`)
  std::shared_ptr<OneDnnNet> onednn;  // its oneDNN forward pass, where uses_onednn()
  std::string engine_why;             // choose_engine's reason
};

class Ensemble {
 public:
  // Loads every checkpoint (errors name the file). weights: empty = equal, else one per model,
  // positive.
  Ensemble(const std::vector<std::string>& checkpoints, const std::vector<double>& weights,
           InferenceOptions opt);
  // Members built in memory (e.g. a network wrapped for timing): each needs `net` and
  // `info.plan`; `path` and `digest` are labels only. Nets are moved to opt.device and put in
  // eval mode.
  Ensemble(std::vector<EnsembleMember> members, InferenceOptions opt);

  // (3, X, Y, Z) float32 CPU: the weighted mean of the members' region probabilities on the
  // case's own (canonical) grid. Members with the same plan share one preprocessing.
  at::Tensor predict_case(const CaseData& data) const;

  const std::vector<EnsembleMember>& members() const { return members_; }
  // How the members run, one entry each, e.g. "student: oneDNN fp32 (16-channel blocks)",
  // "unet: LibTorch bf16 autocast"; and the test-time augmentation, e.g. "4 flips (xy), one per
  // pass". predict prints both first and writes them to config.json.
  std::vector<std::string> engines() const;
  std::string tta() const;
  const InferenceOptions& options() const { return opt_; }

 private:
  // Every member's net on opt_.device, in eval mode, its plan checked.
  void place_members();

  std::vector<EnsembleMember> members_;
  InferenceOptions opt_;
};

}  // namespace kdseg
