// `kdseg train --distributed` (issue 10): two kdseg processes on loopback (Gloo, CPU) train as one
// process with their batches together would, a killed rank stops the other with a clear message,
// and the run resumes; a resume with another world size is refused.
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

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kdseg/models/checkpoint.h"
#include "kdseg/models/net.h"
#include "support/test_support.h"

extern char** environ;

namespace kdseg {
namespace {

#ifdef KDSEG_HAVE_GLOO

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Vars = std::map<std::string, std::string>;

// Weights of 2 ranks x batch 1 vs 1 process x batch 2 after 3 SGD steps: the same samples and
// the same arithmetic except the order of float sums (convolutions over a batch of 1 vs 2, the
// gradient mean over ranks vs over the batch). Observed here: max |difference| 3e-8 (the weights
// moved 0.11). SGD, not the student's Adam: Adam divides each gradient component by its own
// running size, so components that are nearly zero turn rounding noise into ~lr-sized steps
// (observed 1.5e-5 with Adam at lr 1e-3), which would test Adam, not the data parallelism.
constexpr double kWeightAtol = 1e-5;

// A TCP port on loopback that nobody listens on right now.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ADD_FAILURE() << "no free port";
    return 29577;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

struct Outcome {
  int exit_code = -1;  // -1: ended by a signal (or killed at the deadline)
  double seconds = 0;  // from the start to its end
  std::string log;
};

// Starts `kdseg <args>` with this environment (torchrun's variables and the kill hook removed)
// plus `vars`, its output into `log`.
pid_t spawn_kdseg(const std::vector<std::string>& args, const Vars& vars, const std::string& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e, key = kv.substr(0, kv.find('='));
    if (key != "RANK" && key != "WORLD_SIZE" && key != "LOCAL_RANK" && key != "MASTER_ADDR" &&
        key != "MASTER_PORT" && key != "KDSEG_DEBUG_KILL_AFTER_STEP")
      env.push_back(kv);
  }
  for (const auto& [k, v] : vars) env.push_back(k + "=" + v);
  std::vector<std::string> all = {KDSEG_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& kv : env) envp.push_back(kv.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, KDSEG_BINARY, &fa, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// Runs `kdseg <args>` as ranks 0 .. world-1 of a loopback group (rank r also gets extra[r]),
// kills whatever still runs after `deadline_s`.
std::vector<Outcome> run_ranks(const std::vector<std::string>& args, int world,
                               const std::vector<Vars>& extra, const std::string& log_dir,
                               double deadline_s = 50) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    Vars v = {{"RANK", std::to_string(r)},
              {"WORLD_SIZE", std::to_string(world)},
              {"LOCAL_RANK", std::to_string(r)},
              {"MASTER_ADDR", "127.0.0.1"},
              {"MASTER_PORT", std::to_string(port)}};
    if (r < static_cast<int>(extra.size()))
      for (const auto& [k, val] : extra[r]) v[k] = val;
    pids.push_back(spawn_kdseg(args, v, log_dir + "/rank" + std::to_string(r) + ".log"));
  }
  const auto t0 = Clock::now();
  std::vector<Outcome> out(world);
  std::vector<bool> done(world, false);
  for (int n_done = 0; n_done < world;) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    for (int r = 0; r < world; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        ++n_done;
        out[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        out[r].seconds = elapsed;
      } else if (elapsed > deadline_s) {
        ::kill(pids[r], SIGKILL);  // the hang these tests exist to rule out
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < world; ++r) {
    std::ifstream f(log_dir + "/rank" + std::to_string(r) + ".log");
    std::stringstream s;
    s << f.rdbuf();
    out[r].log = s.str();
  }
  return out;
}

// The largest |a - b| over the state dicts' tensors; *worst_key names the tensor.
double max_abs_difference(const Checkpoint& a, const Checkpoint& b,
                          std::string* worst_key = nullptr) {
  EXPECT_EQ(a.state.size(), b.state.size());
  double worst = 0;
  for (const auto& kv : a.state) {
    if (!b.state.contains(kv.key())) {
      ADD_FAILURE() << kv.key() << " missing";
      continue;
    }
    const at::Tensor x = kv.value().to(at::kDouble), y = b.state.at(kv.key()).to(at::kDouble);
    const double d = x.numel() > 0 ? (x - y).abs().max().item<double>() : 0.0;
    if (d > worst && worst_key) *worst_key = kv.key();
    worst = std::max(worst, d);
  }
  return worst;
}

// The losses column of a log.csv.
std::vector<double> logged_losses(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  std::vector<double> losses;
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string cell;
    for (int i = 0; i < 3; ++i) std::getline(ss, cell, ',');
    losses.push_back(std::stod(cell));
  }
  return losses;
}

class DistributedTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::ScratchDir("dist_training");
    for (int i = 0; i < 4; ++i)
      test::write_case(dir_->str("labeled"), "L" + std::to_string(i), Layout::brats2021,
                       test::phantom_labels({30, 28, 24}, {14.0 + i, 13, 12}, 6 + i));
  }
  static void TearDownTestSuite() { delete dir_; }

  // kdseg train arguments of the tiny student: 3 steps, validation only at the end.
  static std::vector<std::string> train_args(const std::string& out, int batch, bool distributed,
                                             const std::string& cache = "cache") {
    std::vector<std::string> a = {"train",
                                  "--model",
                                  "student",
                                  "--model-options",
                                  R"({"widths":[8,8,16,16],"norm_groups":4})",
                                  "--data",
                                  dir_->str("labeled"),
                                  "--cache",
                                  dir_->str(cache),
                                  "--steps",
                                  "3",
                                  "--batch",
                                  std::to_string(batch),
                                  "--patch",
                                  "16,16,16",
                                  "--optimizer",
                                  "sgd",
                                  "--lr",
                                  "0.05",
                                  "--val-every",
                                  "0",
                                  "--log-every",
                                  "1",
                                  "--checkpoint-every",
                                  "1",
                                  "--val-fraction",
                                  "0.25",
                                  "--workers",
                                  "1",
                                  "--threads",
                                  "1",
                                  "--seed",
                                  "5",
                                  "--out",
                                  dir_->str(out)};
    if (distributed) a.insert(a.end(), {"--distributed", "--dist-timeout", "10"});
    return a;
  }
  // One plain process (no torchrun variables).
  static Outcome run_plain(const std::vector<std::string>& args, const std::string& name) {
    fs::create_directories(dir_->path() / "logs" / name);
    const std::string log = dir_->str("logs/" + name + "/rank0.log");
    Outcome o;
    const pid_t pid = spawn_kdseg(args, {}, log);
    int status = 0;
    if (::waitpid(pid, &status, 0) == pid && WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    std::stringstream s;
    s << std::ifstream(log).rdbuf();
    o.log = s.str();
    return o;
  }
  static std::vector<Outcome> run_two(const std::vector<std::string>& args, const std::string& name,
                                      const std::vector<Vars>& extra = {}) {
    fs::create_directories(dir_->path() / "logs" / name);
    return run_ranks(args, 2, extra, dir_->str("logs/" + name));
  }
  static test::ScratchDir* dir_;
};
test::ScratchDir* DistributedTraining::dir_ = nullptr;

// The acceptance test: 2 ranks with batch 1 each = 1 process with batch 2 (same seed).
TEST_F(DistributedTraining, TwoProcessesTrainAsOneProcessWithBothBatches) {
  // One process (no --distributed, no torchrun variables), batch 2; it also builds the cache.
  const Outcome single = run_plain(train_args("single", 2, false), "single");
  ASSERT_EQ(single.exit_code, 0) << single.log;

  const auto two = run_two(train_args("two", 1, true), "two");
  for (int r = 0; r < 2; ++r) ASSERT_EQ(two[r].exit_code, 0) << "rank " << r << ":\n" << two[r].log;
  EXPECT_NE(two[0].log.find("distributed over 2 processes (gloo)"), std::string::npos)
      << two[0].log;
  EXPECT_EQ(two[1].log.find("train: step"), std::string::npos) << "rank 1 logs progress";

  const Checkpoint a = read_checkpoint(dir_->str("single/checkpoints/last.pt"));
  const Checkpoint b = read_checkpoint(dir_->str("two/checkpoints/last.pt"));
  EXPECT_EQ(a.extra.at("step").toInt(), 3);
  EXPECT_EQ(b.extra.at("step").toInt(), 3);
  EXPECT_EQ(b.extra.at("world_size").toInt(), 2);
  std::string worst;
  const double diff = max_abs_difference(a, b, &worst);
  std::printf("max |weight difference| 2 ranks x batch 1 vs 1 process x batch 2: %.3g (%s)\n", diff,
              worst.c_str());
  EXPECT_LT(diff, kWeightAtol);
  // The weights moved far more than that from their initialisation (seed 5)
  torch::manual_seed(5);
  const SegNet init = make_net("student", {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}});
  double moved = 0;
  for (const auto& p : init->named_parameters())
    moved = std::max(moved, (p.value() - a.state.at(p.key())).abs().max().item<double>());
  std::printf("max |weight change| from the initialisation: %.3g\n", moved);
  EXPECT_GT(moved, 100 * kWeightAtol);

  // The log: one row per step (rank 0's alone), the loss = the mean over the ranks = the loss of
  // the union batch.
  const auto la = logged_losses(dir_->str("single/log.csv")),
             lb = logged_losses(dir_->str("two/log.csv"));
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(la[i], lb[i], 1e-4 * std::abs(la[i])) << "step " << i;
  // config.json records the world and the global batch; done.json, the collectives' share.
  const auto config = nlohmann::json::parse(std::ifstream(dir_->str("two/config.json")));
  EXPECT_EQ(config.at("world_size"), 2);
  EXPECT_EQ(config.at("global_batch"), 2);
  EXPECT_EQ(config.at("train").at("batch"), 1);
  const auto done = nlohmann::json::parse(std::ifstream(dir_->str("two/done.json")));
  EXPECT_EQ(done.at("steps"), 3);
  EXPECT_EQ(done.at("world_size"), 2);
  EXPECT_GT(done.at("collective_fraction").get<double>(), 0.0);
  for (const auto& e : fs::recursive_directory_iterator(dir_->path() / "two"))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

// A rank killed after step 1: the other stops within its 10 s timeout with a message naming the
// dead rank; then `--resume` of both ranks ends with the weights of an uninterrupted 2-rank run.
TEST_F(DistributedTraining, AKilledRankStopsTheOtherAndTheRunResumes) {
  const auto whole = run_two(train_args("whole", 1, true), "whole");
  for (int r = 0; r < 2; ++r)
    ASSERT_EQ(whole[r].exit_code, 0) << "rank " << r << ":\n" << whole[r].log;

  const auto killed = run_two(train_args("killed", 1, true), "killed",
                              {{}, {{"KDSEG_DEBUG_KILL_AFTER_STEP", "1"}}});
  EXPECT_EQ(killed[1].exit_code, -1) << "rank 1 was not killed:\n" << killed[1].log;
  EXPECT_EQ(killed[0].exit_code, 1) << killed[0].log;
  EXPECT_LT(killed[0].seconds, 40.0) << killed[0].log;
  EXPECT_NE(killed[0].log.find("kdseg: error: --distributed (rank 0 of 2)"), std::string::npos)
      << killed[0].log;
  EXPECT_NE(killed[0].log.find("rank 1 closed its connection"), std::string::npos) << killed[0].log;
  EXPECT_NE(killed[0].log.find("step 2: averaging the gradients"), std::string::npos)
      << killed[0].log;
  EXPECT_FALSE(fs::exists(dir_->path() / "killed" / "done.json"));
  EXPECT_EQ(read_checkpoint(dir_->str("killed/checkpoints/last.pt")).extra.at("step").toInt(), 1);

  std::vector<std::string> resume = train_args("killed", 1, true);
  resume.push_back("--resume");
  const auto resumed = run_two(resume, "resumed");
  for (int r = 0; r < 2; ++r)
    ASSERT_EQ(resumed[r].exit_code, 0) << "rank " << r << ":\n" << resumed[r].log;
  const Checkpoint a = read_checkpoint(dir_->str("whole/checkpoints/last.pt"));
  const Checkpoint b = read_checkpoint(dir_->str("killed/checkpoints/last.pt"));
  EXPECT_EQ(b.extra.at("step").toInt(), 3);
  for (const auto& kv : a.state)
    EXPECT_TRUE(at::equal(kv.value(), b.state.at(kv.key()))) << kv.key();
  EXPECT_EQ(logged_losses(dir_->str("whole/log.csv")), logged_losses(dir_->str("killed/log.csv")));
}

TEST_F(DistributedTraining, AResumeWithAnotherWorldSizeOrWithoutTheVariablesIsRefused) {
  // Without torchrun's variables: the error names the missing one, before any work.
  const Outcome no_env = run_plain(train_args("no_env", 1, true), "no_env");
  EXPECT_EQ(no_env.exit_code, 1) << no_env.log;
  EXPECT_NE(no_env.log.find("$RANK"), std::string::npos) << no_env.log;
  EXPECT_FALSE(fs::exists(dir_->path() / "no_env"));

  std::vector<std::string> args = train_args("world1", 1, false);
  args[std::find(args.begin(), args.end(), "--steps") - args.begin() + 1] = "2";
  const Outcome first = run_plain(args, "world1");
  ASSERT_EQ(first.exit_code, 0) << first.log;
  std::vector<std::string> resume = train_args("world1", 1, true);
  resume.push_back("--resume");
  const auto two = run_two(resume, "world2");
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(two[r].exit_code, 1) << two[r].log;
    EXPECT_NE(two[r].log.find("--resume with 2 process(es); the run was trained with 1"),
              std::string::npos)
        << two[r].log;
  }
  // The same world (1) with --distributed resumes: "distributed" itself may change.
  const auto one = run_ranks(resume, 1, {}, dir_->str("logs/world1"), 50)[0];
  EXPECT_EQ(one.exit_code, 0) << one.log;
  EXPECT_EQ(read_checkpoint(dir_->str("world1/checkpoints/last.pt")).extra.at("step").toInt(), 3);
}

#endif  // KDSEG_HAVE_GLOO

}  // namespace
}  // namespace kdseg
