// run_child_jobs: dependencies are waited for, jobs do run side by side, a failure stops new
// jobs and names the job and its log; last_log_line reads a progress line's last state.
#include "kdseg/util/child_jobs.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

ChildJob shell(const std::string& name, const std::string& script, const test::ScratchDir& dir,
               std::vector<size_t> after = {}) {
  ChildJob j;
  j.name = name;
  j.argv = {"/bin/sh", "-c", script};
  j.log = dir.str(name + ".log");
  j.after = std::move(after);
  return j;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ChildJobs, AJobStartsAfterTheJobsItDependsOn) {
  test::ScratchDir dir("child_jobs_order");
  const std::string trace = dir.str("trace");
  // b depends on a; a sleeps first, so with two slots b would overtake it without the wait.
  std::vector<ChildJob> jobs{
      shell("a", "sleep 0.3; echo a >> " + trace, dir),
      shell("c", "echo c >> " + trace, dir),
      shell("b", "echo b >> " + trace, dir, {0}),
  };
  ChildJobOptions opt;
  opt.parallel = 2;
  run_child_jobs(jobs, opt);
  const std::string t = read_text(trace);
  ASSERT_EQ(t.size(), 6u) << t;
  EXPECT_LT(t.find('a'), t.find('b')) << t;
}

TEST(ChildJobs, JobsRunSideBySide) {
  // Each job waits (up to 20 s) for the other's file: both finish only if both run at once.
  test::ScratchDir dir("child_jobs_parallel");
  const std::string a = dir.str("a"), b = dir.str("b");
  auto meet = [](const std::string& mine, const std::string& other) {
    return "touch " + mine + "; i=0; while [ ! -e " + other +
           " ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; test -e " + other;
  };
  std::vector<ChildJob> jobs{shell("one", meet(a, b), dir), shell("two", meet(b, a), dir)};
  ChildJobOptions opt;
  opt.parallel = 2;
  EXPECT_NO_THROW(run_child_jobs(jobs, opt));
}

TEST(ChildJobs, AFailureStopsNewJobsAndNamesTheJobAndItsLog) {
  test::ScratchDir dir("child_jobs_failure");
  const std::string trace = dir.str("trace");
  std::vector<ChildJob> jobs{
      shell("first", "echo first >> " + trace, dir),
      shell("broken", "echo 'train: step 3/9' >&2; echo 'cannot read x.nii.gz' >&2; exit 3", dir),
      shell("later", "echo later >> " + trace, dir),
  };
  std::vector<std::string> said;
  ChildJobOptions opt;
  opt.parallel = 1;
  opt.say = [&](const std::string& s) { said.push_back(s); };
  try {
    run_child_jobs(jobs, opt);
    FAIL() << "a failed job must throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("broken"), std::string::npos) << m;
    EXPECT_NE(m.find("exit status 3"), std::string::npos) << m;
    EXPECT_NE(m.find(dir.str("broken.log")), std::string::npos) << m;
    EXPECT_NE(m.find("cannot read x.nii.gz"), std::string::npos) << m;
  }
  EXPECT_EQ(read_text(trace), "first\n") << "no job starts after a failure";
  bool reported = false;
  for (const auto& s : said) reported = reported || s.find("broken: FAILED") != std::string::npos;
  EXPECT_TRUE(reported);
}

TEST(ChildJobs, AProgramThatCannotStartIsAFailure) {
  test::ScratchDir dir("child_jobs_missing");
  ChildJob j;
  j.name = "ghost";
  j.argv = {dir.str("no-such-program")};
  j.log = dir.str("ghost.log");
  EXPECT_THROW(run_child_jobs({j}, ChildJobOptions{}), Error);
}

TEST(ChildJobs, ADependencyMustBeAnEarlierJob) {
  test::ScratchDir dir("child_jobs_cycle");
  std::vector<ChildJob> jobs{shell("a", "true", dir, {1}), shell("b", "true", dir, {0})};
  EXPECT_THROW(run_child_jobs(jobs, ChildJobOptions{}), Error);
}

TEST(ChildJobs, LastLogLineIsTheProgressLinesLastState) {
  test::ScratchDir dir("child_jobs_log");
  {
    std::ofstream f(dir.str("log"));
    f << "train: preparing data\nstep 1/9\rstep 2/9\rstep 3/9  ETA 5 s\r\n\n";
  }
  EXPECT_EQ(last_log_line(dir.str("log")), "step 3/9  ETA 5 s");
  EXPECT_EQ(last_log_line(dir.str("missing")), "");
}

}  // namespace
}  // namespace kdseg
