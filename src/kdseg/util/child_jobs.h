#pragma once
// Child processes run a few at a time, each as soon as the jobs it depends on have finished: how
// `kdseg reproduce --jobs N` trains its models side by side (docs/experiment.md "Parallel jobs").
// Processes rather than threads: LibTorch's global generator and its OpenMP pool are per process,
// so one model's training must not share either with another's. LibTorch-free.
//
// A job's stdout and stderr go to its log file (appended to, so a resumed job keeps its earlier
// lines). A job is killed when this process dies (Linux: PR_SET_PDEATHSIG), so that a rerun never
// finds an orphan still writing into the same run folder.
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace kdseg {

struct ChildJob {
  std::string name;               // in progress lines and errors, e.g. "seed 1: unet"
  std::vector<std::string> argv;  // argv[0]: the program's path
  std::string log;                // stdout and stderr, appended
  std::vector<size_t> after;      // indices of the jobs that must finish first
  double cost = 1;                // relative amount of work, for the ETA (e.g. steps x voxels)
};

struct ChildJobOptions {
  int parallel = 1;            // jobs at once (>= 1)
  double status_every_s = 60;  // a line with each running job's latest log line; 0 = never
  std::function<void(const std::string&)> say;  // progress lines; empty = silent
};

// Runs every job, at most `parallel` at once; among the jobs whose dependencies are done, the one
// listed first starts first. After a job fails (non-zero exit, signal, or a program that cannot
// start) no new job starts; the running ones are waited for; then throws kdseg::Error naming the
// job, how it ended, its log and the log's last lines. Throws for a dependency that is not an
// earlier job (so the jobs cannot wait on each other in a cycle).
void run_child_jobs(const std::vector<ChildJob>& jobs, const ChildJobOptions& opt);

// The last non-empty line of a text file (a line ends at '\n' or '\r': a progress line counts),
// at most `max_chars` from its end; "" for a file that is missing or empty.
std::string last_log_line(const std::string& path, size_t max_chars = 160);

// The memory the kernel says new work can use (MemAvailable of /proc/meminfo), in bytes; 0 where
// it is not known.
double available_memory_bytes();

}  // namespace kdseg
