#pragma once
// `kdseg train`: the training engine (docs/design.md §4). One function, train(), runs a whole
// training run from a TrainOptions: configuration checks before any work, data through the
// preprocessing cache and the threaded loader, optimiser + schedule, validation with the BraTS Dice
// every val_every steps, atomic checkpoints, and --resume that continues bit for bit.
//
// Output folder (docs/outputs.md): config.json, splits.json, log.csv, checkpoints/{last,best}.pt,
// done.json; with a mean teacher (--unlabelled, train/mean_teacher.h) also checkpoints/teacher.pt,
// the teacher's final weights (last.pt and best.pt hold the student's, and last.pt the teacher's
// for --resume).
//
// Distributed (data-parallel) training, `distributed = true`: every process of a torchrun-style
// launch (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) calls train() with the same
// options. The ranks join one c10d group (dist/process_group.h) before any work; rank 0's
// initial weights are broadcast; `batch` is per rank (global batch = batch x world), rank r
// making samples r*B .. r*B+B-1 of each step's global batch (data/loader.h), so after K steps the
// weights equal, up to float summation order, those of one process with batch B x world. Each
// step's gradients (and the logged loss) are averaged over the ranks before the optimiser step.
// Only rank 0 writes (config.json, splits.json, the cache on a first run, log.csv, checkpoints,
// done.json); it prepares the data and validates while the others wait (at most dist_timeout_s).
// --resume: every rank reads the same last.pt, which must come from a run of the same world
// size. Not equivalent to one big batch: loss.batch_dice (Dice sums run over each rank's own
// samples) and per-voxel ignore weights (BCE is averaged over each rank's own voxels).
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kdseg/data/augment.h"
#include "kdseg/data/folders.h"
#include "kdseg/train/loss.h"
#include "kdseg/train/mean_teacher.h"
#include "kdseg/train/optimizer.h"
#include "kdseg/train/schedule.h"

namespace kdseg {

struct TrainOptions {
  std::string model = "student";  // unet, resunet, resunet-vae, cascade, student
  nlohmann::json model_options =
      nlohmann::json::object();            // architecture options; missing keys
                                           // keep the paper size, e.g. {"widths":[8,16,32,64]}
  std::vector<DataFolderSpec> data;        // --data DIR[:W], repeated
  std::string out;                         // run folder, e.g. runs/unet
  std::string cache;                       // preprocessing cache; "" = default_cache_dir()
  std::string splits;                      // splits.json; "" = <out>/splits.json
  double val_fraction = 0.2;               // of the labelled cases, when a split is made
  int64_t steps = 10000;                   // optimiser steps, e.g. 160000 (the paper's unet)
  int64_t steps_per_epoch = 100;           // what schedules and the log call an epoch
  int64_t batch = 0;                       // samples per step; 0 = the paper's (2; cascade 4)
  std::array<int64_t, 3> patch{0, 0, 0};   // voxels (D,H,W); 0 = the paper's for the model
  std::array<double, 3> spacing{0, 0, 0};  // mm to resample to; 0 = keep the data's
  std::array<int64_t, 3> fixed_shape{-1, -1, -1};  // resample the brain box to it; -1 = the
                                                   // paper's (cascade 128³), 0 = none
  double foreground_share = 0.33;                  // share of patches centred on tumour
  std::string optimizer = "auto";                  // adam, sgd; auto = the paper's for the model
  double lr = 0;                                   // initial learning rate; 0 = the paper's
  std::string schedule = "auto";                   // constant, step, exp, poly; auto = the paper's
  ScheduleOptions schedule_options;                // drop_at, drop, gamma, power, warmup (kind and
                                                   // lr come from the two fields above)
  OptimizerOptions optimizer_options;              // momentum, weight decay, betas (kind: above)
  int64_t val_every = 500;           // validate every N steps (and at the end); 0 = only at the end
  double val_overlap = 0.25;         // sliding-window overlap during validation
  int64_t log_every = 10;            // a log.csv row and a progress line every N steps
  int64_t checkpoint_every = 100;    // last.pt every N steps (and at the end)
  uint64_t seed = 2019;              // drives initialisation, split and sampling
  bool resume = false;               // continue from <out>/checkpoints/last.pt
  std::string init;                  // start from this checkpoint's weights (same model and
                                     // options, e.g. a student to fine-tune), the optimiser
                                     // and schedule afresh; "" = initialised by `seed`
  bool bf16 = false;                 // bf16 autocast for forward and backward
  bool allow_emulated_bf16 = false;  // bf16 on a CPU without native bf16 (refused otherwise)
  AugmentOptions augment;
  LossOptions loss;
  MeanTeacherOptions mean_teacher;  // --unlabelled DIR: the online mean teacher (mean_teacher.h)
  double soft_temperature = 1;  // soft targets p become sigmoid(logit(p)/T); 1 = as given
  int workers = 2;              // loader threads, e.g. 1
  int prefetch = 4;             // batches made ahead
  double min_confidence = 0;    // pseudo-labelled cases below it are left out
  double drop_fraction = 0;     // and then this share of the least confident ones, e.g. 0.2
  int threads = 1;              // preprocessing threads (model threads: --threads of the process)
  std::string device = "cpu";   // e.g. "cuda" (distributed: rank's cuda:LOCAL_RANK)
  bool quiet = false;           // no progress lines
  bool distributed = false;     // data-parallel over the processes of a torchrun-style launch
  int dist_timeout_s = 300;     // longest wait for another rank (collectives, rank 0's data
                                // preparation and validation) before failing, e.g. 600
};

// The paper's settings for a model, applied where `opt` says auto/0/-1: optimiser, lr,
// schedule, batch, patch, fixed_shape.
TrainOptions with_paper_defaults(TrainOptions opt);
nlohmann::json to_json(const TrainOptions& opt);

struct TrainResult {
  int64_t steps = 0;                  // steps done (in all, including before a resume)
  int64_t best_step = -1;             // step of best.pt
  double best_mean_dice = -1;         // its validation mean Dice (WT, TC, ET)
  std::vector<int64_t> val_steps;     // validations run by this process
  std::vector<double> val_mean_dice;  // and their mean Dice
  std::vector<double> losses;         // the loss of every step run by this process
  double seconds = 0;                 // wall time of this process's training
  double wait_fraction = 0;           // share of it spent waiting for data
  int64_t world = 1;                  // processes that trained together (1: not distributed)
  double collective_seconds = 0;      // of `seconds`, spent in collectives (distributed)
  // Hard Dice (probability 0.5) of WT, TC, ET on the training patches of the last tenth of the
  // steps (this process's, rank 0's when distributed; 1 where neither side has a voxel), and
  // over how many steps; done.json's train_hard_dice.
  std::array<double, 3> train_hard_dice{-1, -1, -1};
  int64_t tail_steps = 0;
  std::vector<std::string> warnings;  // e.g. a region the model never predicts (also printed)
};

// From hard_overlap_counts summed over `steps` training steps ((C,3): true positives, predicted,
// target voxels; C = WT, TC, ET): one warning per region with target voxels of which the model
// predicted none.
std::vector<std::string> dead_region_warnings(const at::Tensor& counts, int64_t steps);

// Runs (or resumes) a training run. Throws kdseg::Error for any configuration problem before
// any work (unknown model, patch larger than a volume or not a multiple of the network's
// stride, empty or unlabelled data folder, a resume that does not match the run).
TrainResult train(const TrainOptions& opt);

// Seconds per optimiser step of the run `opt` describes (its model, options, patch, batch,
// optimiser, bf16, device), measured on random inputs and targets: `n_warmup` steps, then the
// median of `n_steps`. Reads no data and writes nothing; the data loader's work (which runs
// ahead on its own threads) is not included. For projections such as reproduce --dry-run.
double time_train_steps(const TrainOptions& opt, int n_steps = 2, int n_warmup = 1);

// Validation Dice per region (WT, TC, ET) of probabilities (3,D,H,W) thresholded at 0.5 against
// internal labels (D,H,W); both empty = 1.
std::array<double, 3> region_dice(const at::Tensor& probs, const at::Tensor& labels);

}  // namespace kdseg
