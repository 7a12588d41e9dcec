#include "kdseg/dist/process_group.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>

#include "kdseg/util/error.h"

#ifdef KDSEG_HAVE_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace kdseg {

namespace {

const char* const kLaunchHint =
    "--distributed reads torchrun's variables: launch with `torchrun --nproc_per_node=2 kdseg "
    "train ... --distributed`, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT on every "
    "process (Slurm: RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS)";

// A whole-string base-10 integer, or an Error naming the variable.
int64_t parse_int(const std::string& name, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || *end != '\0' ||
      errno == ERANGE)
    throw Error("$" + name, "is '" + text + "', not an integer", kLaunchHint);
  return v;
}

const std::string& required(const std::map<std::string, std::string>& vars,
                            const std::string& name) {
  auto it = vars.find(name);
  if (it == vars.end()) throw Error("$" + name, "is not set", kLaunchHint);
  return it->second;
}

void check_env(const DistEnv& env) {
  if (env.world < 1)
    throw Error("$WORLD_SIZE", "is " + std::to_string(env.world) + ", must be at least 1",
                kLaunchHint);
  if (env.rank < 0 || env.rank >= env.world)
    throw Error("$RANK",
                "is " + std::to_string(env.rank) + " but WORLD_SIZE is " +
                    std::to_string(env.world) + " (RANK must be 0 .. " +
                    std::to_string(env.world - 1) + ")",
                kLaunchHint);
  if (env.local_rank < 0)
    throw Error("$LOCAL_RANK", "is " + std::to_string(env.local_rank) + ", must be >= 0",
                kLaunchHint);
  if (env.port < 1 || env.port > 65535)
    throw Error("$MASTER_PORT", "is " + std::to_string(env.port) + ", must be 1 .. 65535",
                "pick a free TCP port on rank 0's host, e.g. 29500");
  if (env.master_addr.empty())
    throw Error("$MASTER_ADDR", "is empty", "set it to rank 0's host name or address");
}

std::string where_of(const DistEnv& env) {
  return "--distributed (rank " + std::to_string(env.rank) + " of " + std::to_string(env.world) +
         ")";
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The message of a c10d/Gloo exception without c10's backtrace: its first line.
std::string first_line(const std::string& msg) {
  const auto nl = msg.find('\n');
  return nl == std::string::npos ? msg : msg.substr(0, nl);
}

bool mentions(const std::string& msg, std::initializer_list<const char*> needles) {
  const std::string m = lower(msg);
  for (const char* n : needles)
    if (m.find(n) != std::string::npos) return true;
  return false;
}

}  // namespace

DistEnv dist_env_from_variables(const std::map<std::string, std::string>& vars) {
  DistEnv env;
  env.rank = parse_int("RANK", required(vars, "RANK"));
  env.world = parse_int("WORLD_SIZE", required(vars, "WORLD_SIZE"));
  env.master_addr = required(vars, "MASTER_ADDR");
  env.port = static_cast<int>(
      std::clamp<int64_t>(parse_int("MASTER_PORT", required(vars, "MASTER_PORT")), -1, 65536));
  auto lr = vars.find("LOCAL_RANK");
  env.local_rank = lr == vars.end() ? 0 : parse_int("LOCAL_RANK", lr->second);
  check_env(env);
  return env;
}

DistEnv dist_env_from_environment() {
  std::map<std::string, std::string> vars;
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"})
    if (const char* v = std::getenv(name)) vars[name] = v;
  return dist_env_from_variables(vars);
}

bool distributed_available() {
#ifdef KDSEG_HAVE_GLOO
  return true;
#else
  return false;
#endif
}

std::string distributed_backends() {
#if defined(KDSEG_HAVE_GLOO) && defined(USE_C10D_NCCL)
  return "gloo, nccl";
#elif defined(KDSEG_HAVE_GLOO)
  return "gloo";
#else
  return "none (built without c10d Gloo)";
#endif
}

// ------------------------------------------------------------------------------ ProcessGroup

#ifdef KDSEG_HAVE_GLOO
namespace {

// The c10d class a backend derives from: ProcessGroup in LibTorch 1.x, Backend in 2.x (where
// ProcessGroup became a dispatcher over backends; a Backend runs collectives by itself).
#if TORCH_VERSION_MAJOR >= 2
using C10dGroup = ::c10d::Backend;
#else
using C10dGroup = ::c10d::ProcessGroup;
#endif

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace
#endif

struct ProcessGroup::Impl {
  DistEnv env;
  std::chrono::seconds timeout{300};
  std::string backend = "none";  // "gloo" or "nccl"
  at::Device buffer_device = at::kCPU;
  std::string failed;  // the first collective failure; the group is unusable after it
  double seconds = 0;
  int64_t n_collectives = 0;
  std::map<int, at::Tensor> flat;  // per dtype: the reused packing buffer
#ifdef KDSEG_HAVE_GLOO
  c10::intrusive_ptr<::c10d::Store> store;
  c10::intrusive_ptr<C10dGroup> group;
#endif

  // The packing buffer of `n` elements of `dtype` (reused between steps).
  at::Tensor buffer(at::ScalarType dtype, int64_t n) {
    at::Tensor& b = flat[static_cast<int>(dtype)];
    if (!b.defined() || b.numel() != n)
      b = at::empty({n}, at::TensorOptions().dtype(dtype).device(buffer_device));
    return b;
  }

  // Runs one collective, timing it and turning any c10d/Gloo failure into a kdseg::Error that
  // says which rank noticed it and what the likely cause is.
  template <class F>
  void run(const std::string& op, F&& body) {
    if (!failed.empty())
      throw Error(where_of(env), op + " after an earlier failure of the group: " + failed,
                  "a c10d group cannot continue after a failure: restart every rank");
    const auto t0 = std::chrono::steady_clock::now();
    try {
      body();
    } catch (const c10::Error& e) {
      fail(op, e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(op, e.what());
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++n_collectives;
  }

  [[noreturn]] void fail(const std::string& op, const std::string& raw) {
    const std::string peer =
        env.world == 2 ? "rank " + std::to_string(1 - env.rank) : "another rank";
    std::string cause;
    if (mentions(raw, {"timed out", "timeout"}))
      cause = "no reply within the timeout (" + std::to_string(timeout.count()) + " s): " + peer +
              " is stuck, died without closing its connection, or is slower than the timeout";
    else if (mentions(raw, {"closed", "reset", "broken pipe", "read error", "eof", "refused",
                            "connection"}))
      cause = peer + " closed its connection: it probably crashed, was killed or exited early";
    else
      cause = "the collective failed";
    failed = op + " failed: " + cause + " [c10d: " + first_line(raw) + "]";
    throw Error(where_of(env), failed,
                "look in the other ranks' logs for the first error, then restart every rank; "
                "raise the timeout if a rank is only slow");
  }
};

ProcessGroup::ProcessGroup(const DistEnv& env, std::chrono::seconds timeout,
                           const std::string& device)
    : impl_(std::make_unique<Impl>()) {
#ifndef KDSEG_HAVE_GLOO
  (void)env;
  (void)timeout;
  (void)device;
  throw Error("--distributed", "this kdseg was built without c10d Gloo",
              "rebuild against a LibTorch that ships torch/csrc/distributed/c10d/"
              "ProcessGroupGloo.hpp, with Gloo's headers installed (Debian: libgloo-dev)");
#else
  check_env(env);
  if (timeout.count() <= 0)
    throw Error("--distributed",
                "timeout must be positive, got " + std::to_string(timeout.count()) + " s");
  impl_->env = env;
  impl_->timeout = timeout;
  impl_->backend = "gloo";
  const bool cuda = device.rfind("cuda", 0) == 0;
#ifdef USE_C10D_NCCL
  if (cuda) {
    impl_->backend = "nccl";
    impl_->buffer_device =
        device == "cuda" ? at::Device(at::kCUDA, env.local_rank) : at::Device(device);
  }
#else
  (void)cuda;
#endif
  if (env.world == 1) return;  // nothing to talk to: every collective is the identity

  const std::string at_master = env.master_addr + ":" + std::to_string(env.port);
  const std::chrono::milliseconds ms(timeout);
  try {
    ::c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world);
    so.waitWorkers = true;
    so.timeout = ms;
    impl_->store = c10::make_intrusive<::c10d::PrefixStore>(
        "kdseg", c10::make_intrusive<::c10d::TCPStore>(env.master_addr, so));
  } catch (const std::exception& e) {
    const std::string raw = first_line(e.what());
    std::string hint =
        env.rank == 0
            ? "rank 0 listens on MASTER_PORT: pick a free port, and check that all " +
                  std::to_string(env.world) + " processes (WORLD_SIZE) were started"
            : "check that rank 0 is running and that MASTER_ADDR/MASTER_PORT reach it from this "
              "host (firewall, host name)";
    throw Error(where_of(env),
                "rendezvous at " + at_master + " failed within " + std::to_string(timeout.count()) +
                    " s [c10d: " + raw + "]",
                hint);
  }

  try {
#ifdef USE_C10D_NCCL
    if (impl_->backend == "nccl") {
      auto opts = ::c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = ms;
      impl_->group = c10::make_intrusive<::c10d::ProcessGroupNCCL>(
          impl_->store, static_cast<int>(env.rank), static_cast<int>(env.world), opts);
      return;
    }
#endif
    auto opts = ::c10d::ProcessGroupGloo::Options::create(ms);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname && *ifname) {
      std::stringstream names(ifname);
      for (std::string name; std::getline(names, name, ',');)
        if (!name.empty())
          opts->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForInterface(name));
    } else if (is_loopback(env.master_addr)) {
      opts->devices.push_back(::c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(::c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->threads = 2;
    impl_->group = c10::make_intrusive<::c10d::ProcessGroupGloo>(
        impl_->store, static_cast<int>(env.rank), static_cast<int>(env.world), opts);
  } catch (const std::exception& e) {
    const std::string raw = first_line(e.what());
    if (mentions(raw, {"timed out", "timeout"}))
      throw Error(where_of(env),
                  "rendezvous at " + at_master + " failed: not all " + std::to_string(env.world) +
                      " ranks joined within " + std::to_string(timeout.count()) +
                      " s [c10d: " + raw + "]",
                  "start WORLD_SIZE processes with the same MASTER_ADDR and MASTER_PORT; on "
                  "several hosts set GLOO_SOCKET_IFNAME to the interface they share (e.g. eth0)");
    throw Error(where_of(env),
                "connecting the " + impl_->backend + " group failed [c10d: " + raw + "]",
                "every rank must reach every other directly; on several hosts set "
                "GLOO_SOCKET_IFNAME to the interface they share (e.g. eth0)");
  }
#endif
}

ProcessGroup::~ProcessGroup() = default;

int64_t ProcessGroup::rank() const {
  return impl_->env.rank;
}
int64_t ProcessGroup::world() const {
  return impl_->env.world;
}
double ProcessGroup::allreduce_seconds() const {
  return impl_->seconds;
}
int64_t ProcessGroup::n_collectives() const {
  return impl_->n_collectives;
}

#ifdef KDSEG_HAVE_GLOO
namespace {

// Indices of `tensors` grouped by dtype, in first-seen order; checks they can be packed.
std::vector<std::vector<size_t>> by_dtype(const std::vector<at::Tensor>& tensors,
                                          const std::string& where, bool floating_only) {
  std::vector<std::vector<size_t>> groups;
  std::vector<at::ScalarType> types;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.defined())
      throw Error(where, "tensor " + std::to_string(i) + " is undefined",
                  "pass only parameters that have a gradient (zero the others first): every "
                  "rank must send the same tensors");
    if (t.device() != tensors[0].device())
      throw Error(where, "tensor " + std::to_string(i) + " is on " + t.device().str() +
                             ", tensor 0 on " + tensors[0].device().str());
    if (floating_only && !at::isFloatingType(t.scalar_type()))
      throw Error(where, "tensor " + std::to_string(i) + " is " +
                             std::string(c10::toString(t.scalar_type())) +
                             ": only floating-point tensors can be averaged");
    auto it = std::find(types.begin(), types.end(), t.scalar_type());
    if (it == types.end()) {
      types.push_back(t.scalar_type());
      groups.emplace_back();
      groups.back().push_back(i);
    } else {
      groups[static_cast<size_t>(it - types.begin())].push_back(i);
    }
  }
  return groups;
}

}  // namespace
#endif

void ProcessGroup::allreduce_mean(std::vector<at::Tensor>& tensors) {
  if (impl_->env.world == 1 || tensors.empty()) return;
#ifdef KDSEG_HAVE_GLOO
  torch::NoGradGuard no_grad;
  for (const auto& idx : by_dtype(tensors, where_of(impl_->env) + " allreduce", true)) {
    int64_t total = 0;
    for (size_t i : idx) total += tensors[i].numel();
    at::Tensor flat = impl_->buffer(tensors[idx[0]].scalar_type(), total);
    impl_->run("allreduce of " + std::to_string(total) + " values", [&] {
      int64_t off = 0;
      for (size_t i : idx) {
        const int64_t n = tensors[i].numel();
        flat.narrow(0, off, n).view(tensors[i].sizes()).copy_(tensors[i]);
        off += n;
      }
      std::vector<at::Tensor> one{flat};
      impl_->group->allreduce(one)->wait();
      flat.div_(static_cast<double>(impl_->env.world));
      off = 0;
      for (size_t i : idx) {
        const int64_t n = tensors[i].numel();
        tensors[i].copy_(flat.narrow(0, off, n).view(tensors[i].sizes()));
        off += n;
      }
    });
  }
#endif
}

std::vector<double> ProcessGroup::mean_across_ranks(const std::vector<double>& values) {
  if (impl_->env.world == 1 || values.empty()) return values;
  std::vector<at::Tensor> one{
      at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(impl_->buffer_device)};
  allreduce_mean(one);
  const at::Tensor cpu = one[0].cpu();
  return std::vector<double>(cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel());
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (root < 0 || root >= impl_->env.world)
    throw Error(where_of(impl_->env) + " broadcast",
                "root " + std::to_string(root) + " is not a rank (0 .. " +
                    std::to_string(impl_->env.world - 1) + ")");
  if (impl_->env.world == 1 || tensors.empty()) return;
#ifdef KDSEG_HAVE_GLOO
  torch::NoGradGuard no_grad;
  const bool is_root = impl_->env.rank == root;
  for (const auto& idx : by_dtype(tensors, where_of(impl_->env) + " broadcast", false)) {
    int64_t total = 0;
    for (size_t i : idx) total += tensors[i].numel();
    at::Tensor flat = impl_->buffer(tensors[idx[0]].scalar_type(), total);
    impl_->run(
        "broadcast of " + std::to_string(total) + " values from rank " + std::to_string(root), [&] {
          int64_t off = 0;
          if (is_root)
            for (size_t i : idx) {
              const int64_t n = tensors[i].numel();
              flat.narrow(0, off, n).view(tensors[i].sizes()).copy_(tensors[i]);
              off += n;
            }
          std::vector<at::Tensor> one{flat};
          ::c10d::BroadcastOptions opts;
          opts.rootRank = root;
          impl_->group->broadcast(one, opts)->wait();
          off = 0;
          if (!is_root)
            for (size_t i : idx) {
              const int64_t n = tensors[i].numel();
              tensors[i].copy_(flat.narrow(0, off, n).view(tensors[i].sizes()));
              off += n;
            }
        });
  }
#endif
}

void ProcessGroup::barrier() {
  if (impl_->env.world == 1) return;
#ifdef KDSEG_HAVE_GLOO
  impl_->run("barrier", [&] { impl_->group->barrier()->wait(); });
#endif
}

}  // namespace kdseg
