// The c10d process group: torchrun's variables, and real 2-process groups on loopback (this test
// binary re-executes itself as the ranks: DistChild.DISABLED_Rank, chosen by KDSEG_DIST_ROLE).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kdseg/dist/process_group.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

extern char** environ;

namespace kdseg {
namespace {

using Vars = std::map<std::string, std::string>;
using Clock = std::chrono::steady_clock;

Vars torchrun_vars() {
  return {{"RANK", "1"},
          {"WORLD_SIZE", "2"},
          {"LOCAL_RANK", "1"},
          {"MASTER_ADDR", "node01"},
          {"MASTER_PORT", "29511"}};
}

// The Error that dist_env_from_variables throws for `vars` (fails the test if none).
Error env_error(const Vars& vars) {
  try {
    dist_env_from_variables(vars);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error("", "");
}

TEST(DistEnv, ParsesTorchrunVariables) {
  const DistEnv env = dist_env_from_variables(torchrun_vars());
  EXPECT_EQ(env.rank, 1);
  EXPECT_EQ(env.world, 2);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, "node01");
  EXPECT_EQ(env.port, 29511);
  Vars no_local = torchrun_vars();
  no_local.erase("LOCAL_RANK");
  EXPECT_EQ(dist_env_from_variables(no_local).local_rank, 0);
}

TEST(DistEnv, MissingOrInvalidVariablesAreNamed) {
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
    Vars v = torchrun_vars();
    v.erase(name);
    const Error e = env_error(v);
    EXPECT_EQ(e.where(), std::string("$") + name);
    EXPECT_NE(e.problem().find("not set"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("torchrun"), std::string::npos) << e.what();
  }
  const std::vector<std::pair<Vars, std::string>> bad = {
      {{{"RANK", "two"}}, "$RANK"},
      {{{"RANK", "1x"}}, "$RANK"},
      {{{"RANK", ""}}, "$RANK"},
      {{{"RANK", "2"}}, "$RANK"},
      {{{"RANK", "-1"}}, "$RANK"},
      {{{"WORLD_SIZE", "0"}}, "$WORLD_SIZE"},
      {{{"LOCAL_RANK", "-3"}}, "$LOCAL_RANK"},
      {{{"MASTER_PORT", "70000"}}, "$MASTER_PORT"},
      {{{"MASTER_PORT", "0"}}, "$MASTER_PORT"},
      {{{"MASTER_ADDR", ""}}, "$MASTER_ADDR"}};
  for (const auto& [change, where] : bad) {
    Vars v = torchrun_vars();
    for (const auto& [k, val] : change) v[k] = val;
    const Error e = env_error(v);
    EXPECT_EQ(e.where(), where) << e.what();
  }
  Vars v = torchrun_vars();
  v["RANK"] = "5";
  EXPECT_NE(std::string(env_error(v).what()).find("WORLD_SIZE is 2"), std::string::npos);
}

TEST(DistEnv, ReadsTheProcessEnvironment) {
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "3", 1);
  ::setenv("MASTER_ADDR", "10.0.0.7", 1);
  ::setenv("MASTER_PORT", "29400", 1);
  ::unsetenv("LOCAL_RANK");
  const DistEnv env = dist_env_from_environment();
  for (const char* n : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(n);
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world, 3);
  EXPECT_EQ(env.master_addr, "10.0.0.7");
  EXPECT_EQ(env.port, 29400);
  EXPECT_THROW(dist_env_from_environment(), Error);
}

#ifndef KDSEG_HAVE_GLOO

TEST(ProcessGroup, WithoutGlooTheFeatureIsReportedUnavailable) {
  EXPECT_FALSE(distributed_available());
  EXPECT_EQ(distributed_backends(), "none (built without c10d Gloo)");
  try {
    ProcessGroup pg(DistEnv{}, std::chrono::seconds(5));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), "--distributed");
    EXPECT_NE(e.problem().find("without c10d Gloo"), std::string::npos);
  }
}

#else

TEST(ProcessGroup, GlooIsBuiltIn) {
  EXPECT_TRUE(distributed_available());
  EXPECT_EQ(distributed_backends().rfind("gloo", 0), 0u) << distributed_backends();
}

// A TCP port on loopback that nobody listens on right now.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "no free port";
    return 29555;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(ProcessGroup, OneRankNeedsNoPeers) {
  ProcessGroup pg(DistEnv{}, std::chrono::seconds(5));
  EXPECT_EQ(pg.world(), 1);
  EXPECT_TRUE(pg.is_main());
  std::vector<at::Tensor> t{torch::arange(6.0).view({2, 3})};
  pg.allreduce_mean(t);
  pg.broadcast(t);
  pg.barrier();
  EXPECT_TRUE(t[0].equal(torch::arange(6.0).view({2, 3})));
  EXPECT_EQ(pg.mean_across_ranks({1.5, 2}), (std::vector<double>{1.5, 2}));
  EXPECT_THROW(pg.broadcast(t, 1), Error);
}

TEST(ProcessGroup, RendezvousTimesOutWhenARankNeverComes) {
  for (int64_t rank : {0, 1}) {  // rank 0 waits for rank 1; rank 1 finds no rank 0 to talk to
    DistEnv env;
    env.rank = rank;
    env.world = 2;
    env.port = free_port();
    const auto t0 = Clock::now();
    try {
      ProcessGroup pg(env, std::chrono::seconds(2));
      FAIL() << "rank " << rank << " of 2 joined alone";
    } catch (const Error& e) {
      EXPECT_NE(e.where().find("rank " + std::to_string(rank) + " of 2"), std::string::npos)
          << e.what();
      EXPECT_NE(e.problem().find("rendezvous at 127.0.0.1:" + std::to_string(env.port)),
                std::string::npos)
          << e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 12.0);
  }
}

// ---------------------------------------------------------------- two real processes

struct Outcome {
  int exit_code = -1;  // -1: killed by a signal or by the deadline
  std::string log;
};

// Runs this test binary as ranks 0 and 1 of a loopback group playing `role`, each with its
// collectives' timeout `timeout_s`; kills whatever still runs after `deadline_s`.
std::vector<Outcome> run_ranks(const std::string& role, int timeout_s, double deadline_s,
                               double* rank0_seconds) {
  const test::ScratchDir dir("dist_" + role);
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      const std::string key = kv.substr(0, kv.find('='));
      if (key != "RANK" && key != "WORLD_SIZE" && key != "LOCAL_RANK" && key != "MASTER_ADDR" &&
          key != "MASTER_PORT" && key.rfind("GTEST_", 0) != 0)
        env.push_back(kv);
    }
    for (const std::string& kv :
         {"RANK=" + std::to_string(rank), std::string("WORLD_SIZE=2"),
          "LOCAL_RANK=" + std::to_string(rank), std::string("MASTER_ADDR=127.0.0.1"),
          "MASTER_PORT=" + std::to_string(port), "KDSEG_DIST_ROLE=" + role,
          "KDSEG_DIST_TIMEOUT=" + std::to_string(timeout_s)})
      env.push_back(kv);
    std::vector<std::string> args = {exe, "--gtest_filter=DistChild.DISABLED_Rank",
                                     "--gtest_also_run_disabled_tests"};
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = dir.str("rank" + std::to_string(rank) + ".log");
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  const auto t0 = Clock::now();
  std::vector<Outcome> out(2);
  std::vector<bool> done(2, false);
  while (!(done[0] && done[1])) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    for (int r = 0; r < 2; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        out[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r == 0 && rank0_seconds) *rank0_seconds = elapsed;
      } else if (elapsed > deadline_s || (r == 1 && done[0] && role == "silent")) {
        ::kill(pids[r], SIGKILL);  // the hang this test exists to rule out, or a sleeper
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < 2; ++r) {
    std::ifstream f(dir.str("rank" + std::to_string(r) + ".log"));
    std::stringstream s;
    s << f.rdbuf();
    out[r].log = s.str();
  }
  return out;
}

TEST(ProcessGroup, TwoRanksAverageGradientsAndBroadcastWeights) {
  const auto out = run_ranks("collectives", 10, 25, nullptr);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(out[r].exit_code, 0) << "rank " << r << ":\n" << out[r].log;
    EXPECT_NE(out[r].log.find("rank " + std::to_string(r) + " collectives ok"), std::string::npos)
        << out[r].log;
  }
}

// Rank 1 leaves after two steps: by a crash (SIGKILL), a clean exit, or by going silent
// (alive, never calling again). Rank 0 must throw a kdseg::Error within its 3 s timeout.
void expect_rank0_notices(const std::string& role, const std::string& cause) {
  double seconds = 0;
  const auto out = run_ranks(role, 3, 25, &seconds);
  EXPECT_EQ(out[0].exit_code, 0) << out[0].log;
  EXPECT_NE(out[0].log.find("rank 0 caught: --distributed (rank 0 of 2)"), std::string::npos)
      << out[0].log;
  EXPECT_NE(out[0].log.find(cause), std::string::npos) << out[0].log;
  EXPECT_LT(seconds, 15.0) << out[0].log;
}

TEST(ProcessGroup, AKilledRankMakesTheOtherThrow) {
  expect_rank0_notices("killed", "rank 1 closed its connection");
}

TEST(ProcessGroup, ARankThatExitsEarlyMakesTheOtherThrow) {
  expect_rank0_notices("exits", "rank 1 closed its connection");
}

TEST(ProcessGroup, ASilentRankMakesTheOtherTimeOut) {
  expect_rank0_notices("silent", "no reply within the timeout (3 s)");
}

// One rank of the tests above (skipped unless KDSEG_DIST_ROLE is set).
TEST(DistChild, DISABLED_Rank) {
  const char* role_env = std::getenv("KDSEG_DIST_ROLE");
  if (!role_env) GTEST_SKIP() << "run by the ProcessGroup tests";
  const std::string role = role_env;
  at::set_num_threads(1);
  const DistEnv env = dist_env_from_environment();
  ProcessGroup pg(env, std::chrono::seconds(std::atoi(std::getenv("KDSEG_DIST_TIMEOUT"))));
  const int64_t r = pg.rank();
  ASSERT_EQ(pg.world(), 2);

  if (role == "collectives") {
    // Rank 0's weights reach rank 1, parameters (leaves that require grad) included.
    auto w = r == 0 ? torch::arange(12.0).view({3, 4}) : torch::zeros({3, 4});
    w.set_requires_grad(true);
    auto d = r == 0 ? torch::full({5}, 7.0, torch::kDouble) : torch::zeros({5}, torch::kDouble);
    auto n = r == 0 ? torch::arange(4, torch::kLong) : torch::zeros({4}, torch::kLong);
    std::vector<at::Tensor> weights{w, d, n};
    pg.broadcast(weights);
    EXPECT_TRUE(w.equal(torch::arange(12.0).view({3, 4})));
    EXPECT_TRUE(d.equal(torch::full({5}, 7.0, torch::kDouble)));
    EXPECT_TRUE(n.equal(torch::arange(4, torch::kLong)));
    EXPECT_TRUE(w.requires_grad());

    // Gradients: the mean over the ranks, whatever their shape, dtype or layout.
    for (int step = 0; step < 3; ++step) {  // the packing buffer is reused between steps
      const double k = static_cast<double>(r + 1 + step);
      std::vector<at::Tensor> g{torch::full({3, 4}, k), torch::arange(6.0).view({2, 3}) * k,
                                torch::full({2}, k, torch::kDouble),
                                torch::full({4, 3}, k).t(),  // not contiguous
                                torch::tensor(k)};
      pg.allreduce_mean(g);
      const double mean = 1.5 + step;  // (1 + 2)/2, (2 + 3)/2, ...
      EXPECT_TRUE(g[0].allclose(torch::full({3, 4}, mean)));
      EXPECT_TRUE(g[1].allclose(torch::arange(6.0).view({2, 3}) * mean));
      EXPECT_TRUE(g[2].allclose(torch::full({2}, mean, torch::kDouble)));
      EXPECT_TRUE(g[3].allclose(torch::full({3, 4}, mean)));
      EXPECT_EQ(g[4].item<double>(), mean);
    }
    EXPECT_EQ(pg.mean_across_ranks({static_cast<double>(r), 10}), (std::vector<double>{0.5, 10}));
    pg.barrier();
    EXPECT_EQ(pg.n_collectives(), 3 + 3 * 2 + 1 + 1);  // one per dtype group, + barrier
    EXPECT_GT(pg.allreduce_seconds(), 0.0);
    if (!::testing::Test::HasFailure()) std::printf("rank %ld collectives ok\n", long(r));
    return;
  }

  // killed / exits / silent: two good steps, then rank 1 leaves.
  std::vector<at::Tensor> g{torch::ones({1000})};
  pg.allreduce_mean(g);
  pg.allreduce_mean(g);
  if (r == 1) {
    if (role == "killed") ::raise(SIGKILL);
    if (role == "silent") std::this_thread::sleep_for(std::chrono::seconds(60));
    return;  // "exits": the group is destroyed and the process ends normally
  }
  try {
    for (int step = 0; step < 100000; ++step) pg.allreduce_mean(g);
    ADD_FAILURE() << "rank 0 never noticed that rank 1 left";
  } catch (const Error& e) {
    std::printf("rank 0 caught: %s\n", e.what());
  }
  // The group stays failed: a later collective says so at once instead of hanging.
  EXPECT_THROW(pg.barrier(), Error);
}

#endif  // KDSEG_HAVE_GLOO

}  // namespace
}  // namespace kdseg
