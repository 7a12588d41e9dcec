#include "kdseg/util/child_jobs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "kdseg/util/error.h"
#include "kdseg/util/progress.h"

namespace kdseg {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Forks and execs `job`; the child writes to its log and dies with this process. Everything the
// child touches between fork and exec is prepared here (a forked copy of a threaded process may
// only make async-signal-safe calls).
pid_t start(const ChildJob& job) {
  std::vector<char*> argv;
  for (const auto& a : job.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0)
    throw Error(job.name, std::string("cannot start a process: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before the line above
    const int fd = ::open(job.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

std::string how_it_ended(int status) {
  if (WIFEXITED(status)) {
    const int rc = WEXITSTATUS(status);
    if (rc == 126) return "could not open its log";
    if (rc == 127) return "could not start (exit status 127)";
    return "exit status " + std::to_string(rc);
  }
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended with status " + std::to_string(status);
}

std::string log_tail(const std::string& path, size_t max_lines) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    const auto r = line.rfind('\r');  // a progress line rewritten in place: its last state
    if (r != std::string::npos && r + 1 < line.size()) line = line.substr(r + 1);
    if (line.empty()) continue;
    lines.push_back(line);
    if (lines.size() > max_lines) lines.erase(lines.begin());
  }
  std::string text;
  for (const auto& l : lines) text += "\n    " + l;
  return text;
}

}  // namespace

std::string last_log_line(const std::string& path, size_t max_chars) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  const std::streamoff n = std::min<std::streamoff>(size, 4096);
  std::string buf(static_cast<size_t>(n), '\0');
  in.seekg(size - n);
  in.read(buf.data(), n);
  const size_t end = buf.find_last_not_of("\r\n \t");
  if (end == std::string::npos) return "";
  const size_t newline = buf.find_last_of("\r\n", end);
  const size_t begin = newline == std::string::npos ? 0 : newline + 1;
  std::string line = buf.substr(begin, end + 1 - begin);
  if (line.size() > max_chars) line = "..." + line.substr(line.size() - max_chars);
  return line;
}

double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    unsigned long long kib = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kib) == 1)
      return static_cast<double>(kib) * 1024.0;
  }
  return 0;
}

void run_child_jobs(const std::vector<ChildJob>& jobs, const ChildJobOptions& opt) {
  for (size_t i = 0; i < jobs.size(); ++i) {
    for (size_t d : jobs[i].after)
      if (d >= i)
        throw Error(jobs[i].name,
                    "depends on job " + std::to_string(d) + ", which is not an earlier job");
    if (jobs[i].argv.empty()) throw Error(jobs[i].name, "no program to run");
  }
  const int parallel = std::max(opt.parallel, 1);
  auto say = [&](const std::string& s) {
    if (opt.say) opt.say(s);
  };
  enum State { kWaiting, kRunning, kDone };
  std::vector<State> state(jobs.size(), kWaiting);
  std::vector<Clock::time_point> started(jobs.size());
  std::map<pid_t, size_t> running;
  double total_cost = 0, done_cost = 0;
  for (const auto& j : jobs) total_cost += j.cost;
  size_t n_done = 0;
  std::string failure;
  const auto t0 = Clock::now();
  auto last_status = Clock::now();

  while (true) {
    // Start what may start: the first ready jobs in list order.
    for (size_t i = 0;
         failure.empty() && running.size() < static_cast<size_t>(parallel) && i < jobs.size();
         ++i) {
      if (state[i] != kWaiting) continue;
      bool ready = true;
      for (size_t d : jobs[i].after) ready = ready && state[d] == kDone;
      if (!ready) continue;
      const pid_t pid = start(jobs[i]);
      state[i] = kRunning;
      started[i] = Clock::now();
      running[pid] = i;
      say(jobs[i].name + ": started (" + std::to_string(running.size()) + " running, log " +
          jobs[i].log + ")");
    }
    if (running.empty()) break;

    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno != EINTR && errno != ECHILD) throw Error("waitpid", std::strerror(errno));
    if (pid <= 0 || !running.count(pid)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (opt.status_every_s > 0 && since(last_status) >= opt.status_every_s) {
        last_status = Clock::now();
        for (const auto& [p, i] : running)
          say(jobs[i].name + " [" + format_seconds(since(started[i])) +
              "]: " + last_log_line(jobs[i].log));
      }
      continue;
    }
    const size_t i = running.at(pid);
    running.erase(pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      state[i] = kDone;
      ++n_done;
      done_cost += jobs[i].cost;
      std::string eta;
      if (done_cost > 0 && done_cost < total_cost)
        eta = ", ETA " + format_seconds(since(t0) / done_cost * (total_cost - done_cost));
      say(jobs[i].name + ": done in " + format_seconds(since(started[i])) + " (" +
          std::to_string(n_done) + " of " + std::to_string(jobs.size()) + " jobs" + eta + ")");
    } else if (failure.empty()) {
      failure = jobs[i].name + " " + how_it_ended(status) + "; its log " + jobs[i].log +
                " ends:" + log_tail(jobs[i].log, 8);
      say(jobs[i].name + ": FAILED (" + how_it_ended(status) + ")" +
          (running.empty() ? "" : "; waiting for the running jobs to finish"));
    }
  }
  if (!failure.empty())
    throw Error("parallel jobs", failure,
                "fix what the log says, then run the same command again: finished jobs are kept");
}

}  // namespace kdseg
