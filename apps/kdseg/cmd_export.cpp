// kdseg export --model CKPT --format torchscript|onnx --out FILE: the network of a checkpoint as a
// file a deployment runtime loads, written by the Python package python/kdseg (python3 -m kdseg
// export), which this command finds and runs.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <vector>

#include "kdseg/cli.h"
#include "kdseg/util/error.h"

namespace kdseg::cli {
namespace fs = std::filesystem;

namespace {

struct ExportOptions {
  std::string model, format, out;
  std::string python = "/usr/bin/python3";
};

// Folders that may hold the Python package kdseg/ (the first with kdseg/__main__.py wins):
// $KDSEG_PYTHONPATH, <exe>/../share/kdseg/python (installed), the sources' python/.
std::vector<fs::path> package_search_paths() {
  std::vector<fs::path> out;
  if (const char* env = std::getenv("KDSEG_PYTHONPATH"); env && *env) out.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    out.push_back((exe.parent_path() / ".." / "share" / "kdseg" / "python").lexically_normal());
  const fs::path here(__FILE__);
  if (here.is_absolute())
    out.push_back((here.parent_path() / ".." / ".." / "python").lexically_normal());
  return out;
}

// Runs `argv` with PYTHONPATH=`path`; returns its exit status (127: could not be started).
int run_python(const std::vector<std::string>& argv, const std::string& path) {
  const pid_t pid = fork();
  if (pid < 0) throw Error("kdseg export", "cannot start a process");
  if (pid == 0) {
    setenv("PYTHONPATH", path.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto opt = std::make_shared<ExportOptions>();
  CLI::App* cmd = app.add_subcommand(
      "export",
      "Write a checkpoint's network as TorchScript or ONNX, with its preprocessing plan inside "
      "(runs python3 -m kdseg export from the Python package; needs python3-torch, and "
      "python3-onnx for ONNX)");
  cmd->add_option("--model", opt->model, "Checkpoint, e.g. runs/student/checkpoints/best.pt")
      ->required();
  cmd->add_option("--format", opt->format, "torchscript or onnx")
      ->required()
      ->check(CLI::IsMember({"torchscript", "onnx"}));
  cmd->add_option("--out", opt->out, "File to write, e.g. student.ts or student.onnx")->required();
  cmd->add_option("--python", opt->python, "Python interpreter with torch")->capture_default_str();
  cmd->callback([opt] {
    std::string package;
    std::string tried;
    for (const auto& p : package_search_paths()) {
      tried += "\n  " + p.string();
      if (fs::is_regular_file(p / "kdseg" / "__main__.py")) {
        package = p.string();
        break;
      }
    }
    if (package.empty())
      throw Error("kdseg export", "cannot find the Python package kdseg; tried:" + tried,
                  "set KDSEG_PYTHONPATH to the folder that holds kdseg/ (python/ of the sources)");
    if (!fs::is_regular_file(opt->python))
      throw Error("--python " + opt->python, "no such interpreter",
                  "apt-get install python3-torch (Debian), or pass --python PATH");
    if (run_python({opt->python, "-c", "import torch"}, package) != 0)
      throw Error("--python " + opt->python, "cannot import torch",
                  "apt-get install python3-torch (and python3-onnx for --format onnx)");
    const int rc = run_python({opt->python, "-m", "kdseg", "export", "--model", opt->model,
                               "--format", opt->format, "--out", opt->out},
                              package);
    if (rc != 0)
      throw Error("kdseg export",
                  "python3 -m kdseg export failed (exit " + std::to_string(rc) + ")",
                  "its message is above");
  });
}

}  // namespace kdseg::cli
