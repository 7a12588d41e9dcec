#pragma once
// The threaded loader (docs/design.md §4): makes training batches on its own threads,
// ahead of the model.
//
// Batch k (optimiser step first_step + k) holds samples draw(step, rank*B + i), i < B, made by
// make_batch() — a pure function of (sampler, augmentation options, step, rank) — so batch k is
// the same with 0, 1 or 8 worker threads, after a resume at any step, and the B-sample batches
// of ranks 0..w-1 together are the (w*B)-sample batch of one process.
// Workers each take the next step to make, at most `prefetch` steps ahead of the consumer, and
// run their tensor operations with `intra_op_threads` LibTorch threads (1: they must not compete
// with the model's own intra-op threads). next() hands batches over in step order and records
// how long the consumer waited.
#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kdseg/data/augment.h"
#include "kdseg/data/sampler.h"

namespace kdseg {

struct LoaderOptions {
  int workers = 2;           // threads making batches, e.g. 1; 0 = made inside next()
  int prefetch = 4;          // batches made ahead of the consumer, e.g. 2 (memory: prefetch+workers
                             // batches of B x (C+3) x patch floats)
  int intra_op_threads = 1;  // LibTorch threads per worker, e.g. 1
  int64_t rank = 0;          // this process's rank (distributed), e.g. 0
  int64_t world = 1;         // number of processes, e.g. 4
};

struct Batch {
  int64_t step = 0;
  at::Tensor image;   // (B,C,D,H,W) float32
  at::Tensor target;  // (B,3,D,H,W) float32, regions WT,TC,ET in [0,1]
  at::Tensor weight;  // (B,1,D,H,W) float32 per-voxel loss weight (0 = ignored); undefined
                      // when no sample of the batch has an ignore mask
  std::vector<SampleSpec> samples;  // what each sample is (case, corner, foreground)
};

// The batch of `step` for `rank`: samples draw(step, rank*B + i), i < B, through make_sample.
Batch make_batch(const Sampler& sampler, const AugmentOptions& aug, int64_t step, int64_t rank = 0);

class Loader {
 public:
  // Starts the workers; the first batch is that of `first_step` (resume: the step to run next).
  Loader(std::shared_ptr<const Sampler> sampler, AugmentOptions aug, LoaderOptions opt,
         int64_t first_step = 0);
  ~Loader();  // stops the workers (batches being made are dropped)
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch, in step order; blocks until it is made. Rethrows a worker's error.
  Batch next();
  int64_t next_step() const;    // the step of the batch next() returns
  double wait_seconds() const;  // total time next() has blocked so far
  double take_wait_seconds();   // the same, and restarts the count (e.g. per epoch)

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  void work();

  std::shared_ptr<const Sampler> sampler_;
  AugmentOptions aug_;
  LoaderOptions opt_;
  mutable std::mutex mutex_;
  std::condition_variable can_make_, made_;
  int64_t next_make_ = 0, next_take_ = 0;
  std::map<int64_t, Slot> ready_;
  bool stop_ = false;
  double waited_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace kdseg
