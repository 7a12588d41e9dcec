#pragma once
// The preprocessing plan a checkpoint records (docs/design.md §2): how its inputs were prepared, so
// that predict applies the same steps and undoes them. Plain data, LibTorch-free. A placeholder
// that the training stage fills; its fields are the contract's list.
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kdseg {

struct PreprocessPlan {
  std::vector<std::string> channels{"t1", "t1ce", "t2", "flair"};  // input channel order
  std::vector<std::string> regions{"WT", "TC", "ET"};  // output channel order (sigmoids)
  std::array<double, 3> spacing{1.0, 1.0, 1.0};  // mm (D,H,W) inputs are resampled to; 0 = as is
  std::array<int64_t, 3> fixed_shape{0, 0, 0};   // voxels (D,H,W) the cropped brain is resampled
                                                 // to, e.g. 128,128,128 (cascade); 0 = none
  std::string crop = "brain_bbox";               // "brain_bbox" (non-zero voxels) or "none"
  std::string normalization = "zscore_nonzero";  // per modality over brain voxels, background 0
  std::array<int64_t, 3> patch{128, 128, 128};   // training patch / inference window (D,H,W),
                                                 // e.g. 144,144,128
  int64_t stride = 1;                            // the network's total stride (save fills it)
};
void to_json(nlohmann::json& j, const PreprocessPlan& p);
void from_json(const nlohmann::json& j, PreprocessPlan& p);  // strict: unknown keys are an error

// The paper's plan for an architecture: patch 128³ (unet), 144×144×128 (resunet, resunet-vae,
// student), or the whole brain resampled to 128³ (cascade). Unknown names get the defaults.
PreprocessPlan paper_plan(const std::string& arch);

}  // namespace kdseg
