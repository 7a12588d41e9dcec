#include "kdseg/data/loader.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>

#include "kdseg/util/error.h"

namespace kdseg {

Batch make_batch(const Sampler& sampler, const AugmentOptions& aug, int64_t step, int64_t rank) {
  const auto& opt = sampler.options();
  Batch b;
  b.step = step;
  std::vector<at::Tensor> images, targets, weights;
  bool any_weight = false;
  for (int64_t i = 0; i < opt.batch; ++i) {
    SampleSpec spec = sampler.draw(step, rank * opt.batch + i);
    Sample s = make_sample(sampler.case_of(spec), spec, opt.patch, aug);
    images.push_back(s.image);
    targets.push_back(s.target);
    weights.push_back(s.weight);
    any_weight = any_weight || s.weight.defined();
    b.samples.push_back(spec);
  }
  b.image = torch::stack(images);
  b.target = torch::stack(targets);
  if (any_weight) {
    for (auto& w : weights)
      if (!w.defined()) w = torch::ones({1, opt.patch[0], opt.patch[1], opt.patch[2]});
    b.weight = torch::stack(weights);
  }
  return b;
}

Loader::Loader(std::shared_ptr<const Sampler> sampler, AugmentOptions aug, LoaderOptions opt,
               int64_t first_step)
    : sampler_(std::move(sampler)),
      aug_(aug),
      opt_(opt),
      next_make_(first_step),
      next_take_(first_step) {
  if (!sampler_) throw Error("loader", "no sampler");
  validate_augment(aug_);
  if (opt_.workers < 0) throw Error("--loader-threads", "must be >= 0");
  if (opt_.prefetch < 1) throw Error("--prefetch", "must be >= 1");
  if (opt_.intra_op_threads < 1) throw Error("loader intra_op_threads", "must be >= 1");
  if (opt_.world < 1 || opt_.rank < 0 || opt_.rank >= opt_.world)
    throw Error("loader", "rank " + std::to_string(opt_.rank) + " of world " +
                              std::to_string(opt_.world) + " is out of range");
  if (opt_.workers == 0) return;
  // at::set_num_threads is per thread under OpenMP (the thread's own ICV) but also stores a
  // process-wide value that threads read when they first run a parallel region. Each worker
  // initialises itself, then sets its own count; the caller's count is restored afterwards.
  const int caller_threads = at::get_num_threads();
  int n_started = 0;
  std::mutex start_mutex;
  std::condition_variable started;
  for (int i = 0; i < opt_.workers; ++i)
    workers_.emplace_back([this, &n_started, &start_mutex, &started] {
      at::internal::lazy_init_num_threads();
      at::set_num_threads(opt_.intra_op_threads);
      {
        // Notified under the lock: once the constructor sees the count complete it returns and
        // these three locals are gone, so no worker may touch them after releasing the lock
        // (a notify after the unlock was a use-after-return: a rare crash at startup).
        std::lock_guard<std::mutex> lock(start_mutex);
        ++n_started;
        started.notify_all();
      }
      work();
    });
  std::unique_lock<std::mutex> lock(start_mutex);
  started.wait(lock, [&] { return n_started == opt_.workers; });
  at::set_num_threads(caller_threads);
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  can_make_.notify_all();
  for (auto& t : workers_) t.join();
}

void Loader::work() {
  for (;;) {
    int64_t step;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      can_make_.wait(lock, [&] { return stop_ || next_make_ < next_take_ + opt_.prefetch; });
      if (stop_) return;
      step = next_make_++;
    }
    Slot slot;
    try {
      slot.batch = make_batch(*sampler_, aug_, step, opt_.rank);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(step, std::move(slot));
    }
    made_.notify_all();
  }
}

Batch Loader::next() {
  if (workers_.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    Batch b = make_batch(*sampler_, aug_, next_take_++, opt_.rank);
    waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return b;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  const auto t0 = std::chrono::steady_clock::now();
  made_.wait(lock, [&] { return ready_.count(next_take_) > 0; });
  waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Slot slot = std::move(ready_.at(next_take_));
  ready_.erase(next_take_);
  ++next_take_;
  lock.unlock();
  can_make_.notify_all();
  if (slot.error) std::rethrow_exception(slot.error);
  return std::move(slot.batch);
}

int64_t Loader::next_step() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return next_take_;
}

double Loader::wait_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waited_;
}

double Loader::take_wait_seconds() {
  std::lock_guard<std::mutex> lock(mutex_);
  const double w = waited_;
  waited_ = 0;
  return w;
}

}  // namespace kdseg
