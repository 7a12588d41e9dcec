#pragma once
// `kdseg pseudo-label` (docs/design.md §2 "Pseudo-labelled dataset"): an ensemble labels cases
// nobody annotated and writes them as a dataset that `kdseg train --data` reads as is.
//
// OUT/<ID>/<ID>_{t1,t1ce,t2,flair}.nii.gz   the images (hard links; copies where links fail;
//                                           written anew for 4D MSD inputs)
// OUT/<ID>/<ID>_seg.nii.gz                  hard labels {0,1,2,4}: thresholded ensemble output
// OUT/<ID>/<ID>_soft.nii.gz                 (target soft) WT,TC,ET probabilities, uint8 x 1/255
// OUT/<ID>/<ID>_ignore.nii.gz               (ignore_band > 0) 1 where some region's probability
//                                           is within the band around the threshold
// OUT/<ID>/pseudo.json                      the case's entry (written last: the case is done)
// OUT/dataset.json                          {"kind": "pseudo", "target", "teachers": [{"path",
//                                           "digest", "weight"}], "threshold", "ignore_band",
//                                           "cases": {ID: {"confidence", "soft", "ignore"}}}
// dataset.json is rebuilt from every pseudo.json present at the end of each run, so N shards
// (--shard i/N: the k-th case in ID order goes to shard k mod N) writing into one folder end
// with the same files as one unsharded run. A rerun skips cases whose pseudo.json exists.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "kdseg/infer/predict.h"

namespace kdseg {

struct PseudoLabelOptions {
  PredictOptions predict;         // models, weights, in, out, inference, threshold, post, overwrite
  std::string target = "hard";    // hard (the paper) or soft (also the ensemble's probabilities)
  double ignore_band = 0;         // ignore mask where |p - threshold| < band for some region, e.g.
                                  // 0.2; 0 = no mask
  bool soft_with_ignore = false;  // allow target soft with an ignore band (refused by default:
                                  // the mask drops the loss where soft targets differ from hard)
  int shard = 0, n_shards = 1;    // --shard i/N
};

// "i/N" with 0 <= i < N. Throws kdseg::Error naming --shard.
std::pair<int, int> parse_shard(const std::string& text);

// Per-case confidence in [0,1]: 1 - the mean binary entropy (bits) of the three region
// probabilities over the voxels where some region's probability exceeds 0.5 or lies in the
// uncertain band (0.1, 0.9) — the voxels where a tumour is or might be. 1 when there are none.
double case_confidence(const at::Tensor& probs);

// (X,Y,Z) uint8: 1 where some region's probability is within `band` of `threshold`.
at::Tensor uncertain_mask(const at::Tensor& probs, double threshold, double band);

struct PseudoLabelReport {
  PredictReport predict;
  std::string dataset_json;  // path written
  int n_cases = 0;           // cases in dataset.json
};

PseudoLabelReport pseudo_label(const PseudoLabelOptions& opt);

}  // namespace kdseg
