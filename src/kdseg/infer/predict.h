#pragma once
// `kdseg predict`: segments every case of a folder (any layout, or one case folder) with one
// network or an ensemble, and writes <ID>.nii.gz label maps on each input's own grid, in the
// input's label convention (or the one asked for) — the BraTS submission format.
#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kdseg/infer/ensemble.h"
#include "kdseg/infer/postprocess.h"

namespace kdseg {

struct PredictOptions {
  std::vector<std::string> models;   // checkpoints, e.g. runs/unet/checkpoints/best.pt (repeated)
  std::vector<double> weights;       // one per model, e.g. 1 1 2; empty = equal
  std::string in;                    // cases in any layout, or one case folder, e.g. cohort/test
  std::array<std::string, 4> files;  // or one case's T1, T1ce, T2, FLAIR files (predict_files)
  std::string out;  // folder for <ID>.nii.gz, e.g. pred/ (predict_files: the label map's path)
  InferenceOptions inference;
  double threshold = 0.5;  // region probability threshold
  PostprocessOptions post;
  bool save_probs = false;       // also <ID>_prob.nii.gz: WT,TC,ET as uint8 x 1/255
  bool overwrite = false;        // redo cases whose output exists
  bool redo_if_changed = false;  // an --out made from other models or options (its
                                 // provenance.json): redo every case instead of refusing
  std::string labels = "auto";   // label convention written: auto (the input's), brats2021,
                                 // brats2023, brats2024, msd or nnunet
  int read_threads = 2;          // threads reading one case's files
  bool quiet = false;            // no per-case progress lines
};

struct PredictReport {
  std::vector<std::string> written, skipped;  // case IDs
  std::vector<std::string> failures;          // "<ID>: reason"
  std::vector<std::string> engines;           // Ensemble::engines()
  std::string tta;                            // Ensemble::tta()
};

// What a case's prediction produced; passed to PredictHooks::after_case.
struct CasePrediction {
  const CaseData* data = nullptr;  // the loaded case
  at::Tensor probs;                // (3,X,Y,Z) float32 on the case's grid
  LabelMap labels;                 // internal labels after postprocessing
};

struct PredictHooks {
  // Decides whether a case is done already (default: <out>/<ID>.nii.gz exists).
  std::function<bool(const std::string& id)> is_done;
  // Writes a case's outputs (default: <ID>.nii.gz [+ _prob]). Must write atomically.
  std::function<void(const CaseFiles& files, const CasePrediction& p)> write;
  // Undoes is_done for a case about to be redone (default: removes <out>/<ID>.nii.gz).
  std::function<void(const std::string& id)> forget;
  // The folder whose provenance.json records what its outputs were made from (unset: opt.out
  // with the default `write`, none with another, e.g. one case's file), and what else they
  // depend on besides the models and the prediction options (pseudo-label: its target and
  // ignore band).
  std::optional<std::string> provenance_dir;
  nlohmann::json provenance_extra = nlohmann::json::object();
};

// What a folder's outputs are made from: each model's digest and weight, the threshold, the
// postprocessing, the mirror TTA, the precision and the label convention written, + `extra`.
// Not the engine (LibTorch or oneDNN give the same labels up to the order of summation) nor
// paths (a checkpoint copied elsewhere is the same model).
nlohmann::json prediction_provenance(const PredictOptions& opt, const Ensemble& ensemble,
                                     const nlohmann::json& extra);
// The top-level keys whose values differ between two provenance records, e.g. "models, tta".
std::string provenance_changes(const nlohmann::json& before, const nlohmann::json& now);

// Predicts every case of opt.in (restricted to `ids` when not empty); a bad case is reported in
// failures and skipped. Loading of the next case overlaps the prediction of the current one.
// Cases already done are skipped only when the folder's provenance.json says they were made from
// the same models and options; otherwise throws kdseg::Error naming the folder and what changed
// (opt.overwrite or opt.redo_if_changed: every case is redone).
PredictReport predict_cases(const PredictOptions& opt, const Ensemble& ensemble,
                            const std::vector<CaseFiles>& cases, const LabelConvention& labels,
                            const PredictHooks& hooks = {});
// One case from four explicit files (opt.files, any names and folders) to the file opt.out
// (.nii.gz or .nii; written even when it exists), in opt.labels (auto = brats2021); with
// save_probs also <stem>_prob.nii.gz beside it.
PredictReport predict_files(const PredictOptions& opt);
// discover_dataset(opt.in) + Ensemble + predict_cases with the default outputs.
PredictReport predict_folder(const PredictOptions& opt);

// Threshold + labels + postprocessing of (3,X,Y,Z) probabilities, as a label map like `image`.
LabelMap probabilities_to_labels(const at::Tensor& probs, const Volume& image, double threshold,
                                 const PostprocessOptions& post);
// Writes (3,X,Y,Z) probabilities like `image` as uint8 with scl_slope 1/255, atomically.
void write_probabilities(const std::string& path, const at::Tensor& probs, const Volume& image);

}  // namespace kdseg
