#pragma once
// Data-parallel training over several processes with PyTorch's own collective engine (c10d):
// Gloo on the CPU, NCCL on CUDA where the LibTorch build has it. Rendezvous follows torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): rank 0 hosts the c10d TCPStore at
// MASTER_ADDR:MASTER_PORT, every rank connects to it, then Gloo connects all pairs directly.
//
// How a trainer uses it (DDP without the autograd hooks):
//   ProcessGroup pg(dist_env_from_environment(), std::chrono::seconds(300));
//   pg.broadcast(params_and_buffers);       // once, before the first step: rank 0's weights
//   loop: forward, backward on this rank's share of the batch;
//         pg.allreduce_mean(grads);          // every step, before optimizer.step()
//   only rank 0 writes checkpoints and logs; pg.barrier() before the others read them.
// Any collective throws kdseg::Error when a peer died or stayed silent for longer than the
// timeout (never hangs forever); the group is then unusable and the process should exit.
//
// No LibTorch/c10d headers here (docs/design.md §7 "Light headers"): at::Tensor is
// forward-declared.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace kdseg {

// Where this process sits in a distributed run.
struct DistEnv {
  int64_t rank = 0;                       // RANK, 0 .. world-1, e.g. 1
  int64_t world = 1;                      // WORLD_SIZE, number of processes, e.g. 2
  int64_t local_rank = 0;                 // LOCAL_RANK, index on this host (picks cuda:N), e.g. 0
  std::string master_addr = "127.0.0.1";  // MASTER_ADDR, host of rank 0, e.g. "node01"
  int port = 29500;                       // MASTER_PORT, rank 0's TCPStore port, e.g. 29500
};

// Parses torchrun's variables from `vars` (name -> value; a missing name is unset). RANK,
// WORLD_SIZE, MASTER_ADDR and MASTER_PORT are required; LOCAL_RANK defaults to 0. Throws
// kdseg::Error naming the variable and its value when one is missing or invalid.
DistEnv dist_env_from_variables(const std::map<std::string, std::string>& vars);
// The same, reading this process's environment.
DistEnv dist_env_from_environment();

// True when this kdseg was built with c10d's Gloo backend (KDSEG_HAVE_GLOO).
bool distributed_available();
// The backends built in, e.g. "gloo", "gloo, nccl", or "none (built without c10d Gloo)".
std::string distributed_backends();

// One process's membership of the group: collectives over all ranks, in the same order on every
// rank. Not thread-safe; one instance per process.
class ProcessGroup {
 public:
  // Joins the group (blocks until every rank has joined, at most `timeout`). device "cpu" uses
  // Gloo; "cuda"/"cuda:N" uses NCCL when built with it, else Gloo (tensors then go through the
  // CPU). GLOO_SOCKET_IFNAME picks the network interface like torchrun; otherwise loopback when
  // MASTER_ADDR is local, else the address of this host's name. world == 1 opens no sockets.
  // Throws kdseg::Error on a bad env, a rendezvous timeout, or without Gloo.
  ProcessGroup(const DistEnv& env, std::chrono::seconds timeout, const std::string& device = "cpu");
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const;
  int64_t world() const;
  bool is_main() const { return rank() == 0; }  // the rank that writes checkpoints and logs

  // Replaces every tensor by its mean over the ranks, in place. The tensors are packed into one
  // flat buffer per dtype (one collective, not one per parameter). All must be defined and on
  // one device; every rank must pass the same shapes in the same order.
  void allreduce_mean(std::vector<at::Tensor>& tensors);
  // Means of a few scalars over the ranks (loss and metrics for the log), e.g. {loss, dice}.
  std::vector<double> mean_across_ranks(const std::vector<double>& values);
  // Copies `root`'s tensors into every other rank's, in place (no autograd recorded).
  void broadcast(std::vector<at::Tensor>& tensors, int root = 0);
  // Returns when every rank has called it.
  void barrier();

  // Wall seconds spent in collectives so far (packing included), and how many were run.
  double allreduce_seconds() const;
  int64_t n_collectives() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kdseg
