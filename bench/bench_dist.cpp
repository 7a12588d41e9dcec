// Data-parallel scaling on this machine: 1 process vs 2 processes (1 thread each) on loopback
// Gloo, and where a distributed step's time goes (compute vs gradient allreduce).
//
//   bench_dist [patch] [steps]        defaults: 32 5        e.g. bench_dist 48 3
//
// 1. One process: the paper-size student's training step (forward + backward, batch 1,
//    (1,4,patch³), fp32, 1 thread), median of `steps`.
// 2. Two processes (this program re-executed as RANK 0 and 1, torchrun's variables): allreduce
//    alone for the student's gradient set (~4.5 M floats) and a tiny student's, then `steps`
//    training steps = compute + allreduce of the gradients, each timed apart.
// Speed-up = samples/s of 2 processes / samples/s of 1. A world of 1 has no collective at all
// (ProcessGroup short-circuits it), so the 1-process step is compute only.
#include <malloc.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "kdseg/dist/process_group.h"
#include "kdseg/models/net.h"
#include "kdseg/util/error.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

kdseg::SegNet student(bool tiny) {
  torch::manual_seed(1);
  if (tiny) return kdseg::make_net("student", {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}});
  return kdseg::make_net("student");
}

// One training step's compute (forward + loss + backward); returns its seconds.
double compute_step(kdseg::SegNet& net, const at::Tensor& x, const at::Tensor& y) {
  const auto t0 = Clock::now();
  net->zero_grad();
  auto loss = torch::binary_cross_entropy_with_logits(net->forward(x).logits, y);
  loss.backward();
  return since(t0);
}

std::vector<at::Tensor> grads_of(kdseg::SegNet& net) {
  std::vector<at::Tensor> g;
  for (auto& p : net->parameters()) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    g.push_back(p.grad());
  }
  return g;
}

int64_t numel(const std::vector<at::Tensor>& ts) {
  int64_t n = 0;
  for (const auto& t : ts) n += t.numel();
  return n;
}

// Seconds per allreduce_mean of `grads` (after 2 warm-ups), median of `reps`.
double seconds_per_allreduce(kdseg::ProcessGroup& pg, std::vector<at::Tensor>& grads, int reps) {
  for (int i = 0; i < 2; ++i) pg.allreduce_mean(grads);
  std::vector<double> s;
  for (int i = 0; i < reps; ++i) {
    pg.barrier();
    const auto t0 = Clock::now();
    pg.allreduce_mean(grads);
    s.push_back(since(t0));
  }
  return median(s);
}

int run_rank(int64_t patch, int steps, double one_process_step) {
  kdseg::ProcessGroup pg(kdseg::dist_env_from_environment(), std::chrono::seconds(120));
  auto net = student(false);
  auto tiny = student(true);
  const auto x = torch::randn({1, 4, patch, patch, patch});
  const auto y = (torch::rand({1, 3, patch, patch, patch}) > 0.9).to(torch::kFloat);

  // Initial weights from rank 0, as the trainer does.
  auto params = net->parameters();
  auto t0 = Clock::now();
  pg.broadcast(params);
  const double t_broadcast = since(t0);

  compute_step(net, x, y);  // warm-up; also creates the gradients
  compute_step(tiny, torch::randn({1, 4, 16, 16, 16}), torch::zeros({1, 3, 16, 16, 16}));
  auto g = grads_of(net);
  auto g_tiny = grads_of(tiny);
  const double ar = seconds_per_allreduce(pg, g, 10);
  const double ar_tiny = seconds_per_allreduce(pg, g_tiny, 50);

  std::vector<double> comp, comm;
  for (int s = 0; s < steps; ++s) {
    pg.barrier();
    comp.push_back(compute_step(net, x, y));
    auto grads = grads_of(net);
    t0 = Clock::now();
    pg.allreduce_mean(grads);
    comm.push_back(since(t0));
  }
  const double c2 = median(comp), a2 = median(comm);
  if (pg.is_main()) {
    const double mb = numel(g) * 4 / 1e6;
    std::printf("2 processes, gloo loopback, 1 thread each:\n");
    std::printf("  broadcast initial weights  %8.4f s  (%.2f M floats)\n", t_broadcast, mb / 4);
    std::printf("  allreduce student grads    %8.4f s  (%.2f M floats, %zu tensors, %.2f GB/s)\n",
                ar, mb / 4, g.size(), mb / 1e3 / ar);
    std::printf("  allreduce tiny grads       %8.6f s  (%.4f M floats, %zu tensors)\n", ar_tiny,
                numel(g_tiny) / 1e6, g_tiny.size());
    std::printf(
        "  training step              %8.3f s  = compute %.3f s + allreduce %.3f s "
        "(%.1f %% communication)\n",
        c2 + a2, c2, a2, 100 * a2 / (c2 + a2));
    std::printf("1 process, 1 thread: step %.3f s (compute only)\n", one_process_step);
    std::printf(
        "speed-up, samples/s of 2 processes vs 1: %.2fx (ideal 2.00x); compute alone "
        "slowed %.2fx by sharing the machine\n",
        2 * one_process_step / (c2 + a2), c2 / one_process_step);
  }
  pg.barrier();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool is_rank = argc > 1 && std::string(argv[1]) == "--rank";
  const int a = is_rank ? 2 : 1;
  const int64_t patch = argc > a ? std::atoll(argv[a]) : 32;
  const int steps = std::max(1, argc > a + 1 ? std::atoi(argv[a + 1]) : 5);
  at::set_num_threads(1);
  mallopt(M_MMAP_MAX, 0);              // as bench_models: no fresh mmap (and page faults) per
  mallopt(M_TRIM_THRESHOLD, INT_MAX);  // large tensor, freed pages stay for the next step
  try {
    if (is_rank) return run_rank(patch, steps, argc > a + 2 ? std::atof(argv[a + 2]) : 0);

    if (!kdseg::distributed_available()) {
      std::printf("bench_dist: %s\n", kdseg::distributed_backends().c_str());
      return 0;
    }
    auto net = student(false);
    auto tiny = student(true);
    std::string load;
    std::getline(std::ifstream("/proc/loadavg"), load);
    std::printf("load average before: %s (other processes share these cores)\n", load.c_str());
    std::printf("student %ld parameters, tiny student %ld; patch %ld^3, batch 1, %d steps\n",
                long(kdseg::count_parameters(*net)), long(kdseg::count_parameters(*tiny)),
                long(patch), steps);
    const auto x = torch::randn({1, 4, patch, patch, patch});
    const auto y = (torch::rand({1, 3, patch, patch, patch}) > 0.9).to(torch::kFloat);
    compute_step(net, x, y);
    std::vector<double> s;
    for (int i = 0; i < steps; ++i) s.push_back(compute_step(net, x, y));
    const double one = median(s);
    std::fflush(stdout);

    // The two ranks: this program again, with torchrun's variables.
    const std::string port = std::to_string(29600 + ::getpid() % 1000);
    std::vector<pid_t> pids;
    for (int rank = 0; rank < 2; ++rank) {
      std::vector<std::string> env;
      for (char** e = environ; *e; ++e) {
        const std::string kv = *e, key = kv.substr(0, kv.find('='));
        if (key != "RANK" && key != "WORLD_SIZE" && key != "LOCAL_RANK" && key != "MASTER_ADDR" &&
            key != "MASTER_PORT")
          env.push_back(kv);
      }
      for (const std::string& kv : {"RANK=" + std::to_string(rank), std::string("WORLD_SIZE=2"),
                                    "LOCAL_RANK=" + std::to_string(rank),
                                    std::string("MASTER_ADDR=127.0.0.1"), "MASTER_PORT=" + port})
        env.push_back(kv);
      std::vector<std::string> args = {argv[0], "--rank", std::to_string(patch),
                                       std::to_string(steps), std::to_string(one)};
      std::vector<char*> av, ev;
      for (auto& s2 : args) av.push_back(s2.data());
      av.push_back(nullptr);
      for (auto& kv : env) ev.push_back(kv.data());
      ev.push_back(nullptr);
      pid_t pid = -1;
      if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, av.data(), ev.data()) != 0) {
        std::fprintf(stderr, "bench_dist: cannot start rank %d\n", rank);
        return 1;
      }
      pids.push_back(pid);
    }
    int rc = 0;
    for (pid_t pid : pids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist: %s\n", e.what());
    return 1;
  }
}
