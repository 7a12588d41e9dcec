// kdseg.predict_case (python/kdseg/predict.py) against `kdseg predict` on one case of the shared
// cohort: a tiny student is trained for a few steps (resampled to 2.5x2.5x2 mm from the cohort's
// 3 mm, so both resamplings are exercised), the binary segments the case, and
// tests/python/predict_check.py segments the same four files in Python and fails when the label
// maps differ in more than 0.1 % of the tumour voxels, or when the binary's map lacks any of the
// labels 1, 2, 4. Three settings: one whole-crop window without TTA, the default xy mirror TTA,
// and 8 overlapping Gaussian-weighted windows; all fp32, Python's precision (`--precision auto`
// is bf16 on a CPU with AVX-512 BF16). Skipped where Debian's Python cannot import torch and
// nibabel.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "support/test_support.h"

namespace kdseg {
namespace {

using test::run_command;
using test::run_kdseg;
using test::ScratchDir;

const std::string kCohort = KDSEG_TEST_COHORT;

// A tiny student trained on the cohort's labelled cases with `args` (steps, ...) into
// dir/student; its last.pt, or "" (with the output printed) when training failed.
std::string train_tiny_student(const ScratchDir& dir, const std::string& args) {
  auto r = run_kdseg(
      "train --model student --model-options '{\"widths\":[8,8,16,16],\"norm_groups\":4}' "
      "--data " +
      kCohort + "/labeled --cache " + dir.str("cache") + " --splits " + dir.str("splits.json") +
      " --out " + dir.str("student") + " --batch 2 --patch 16,16,16 --val-every 100 " + args +
      " --threads 2 --workers 1 --quiet");
  if (r.exit_code != 0) {
    std::cout << r.output;
    return "";
  }
  return dir.str("student/checkpoints/last.pt");
}

TEST(PythonPredict, SameLabelsAsKdsegPredict) {
  const std::string python = KDSEG_SYSTEM_PYTHON;
  if (run_command(python + " -c 'import torch, nibabel'").exit_code != 0)
    GTEST_SKIP() << python
                 << " cannot import torch and nibabel (Debian's python3-torch, "
                    "python3-nibabel): no check of kdseg.predict_case";
  ScratchDir dir("e2e_python_predict");
  const std::string model =
      train_tiny_student(dir, "--steps 16 --lr 3e-3 --spacing 2.5,2.5,2 --log-every 8");
  ASSERT_FALSE(model.empty());
  // SYN_T0002: the case where this student predicts all three labels.
  const std::string id = "SYN_T0002", case_dir = kCohort + "/test/" + id;
  const std::string source = KDSEG_SOURCE_DIR;

  struct Setting {
    std::string name, tta, window;
  };
  for (const Setting& s : {Setting{"whole", "none", "auto"}, Setting{"tta", "xy", "auto"},
                           Setting{"windows", "none", "48x64x64"}}) {
    SCOPED_TRACE(s.name);
    const std::string out = dir.str("cpp_" + s.name);
    auto r =
        run_kdseg("predict --model " + model + " --in " + case_dir + " --out " + out + " --tta " +
                  s.tta + " --window " + s.window + " --precision fp32 --quiet --threads 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_command("PYTHONPATH=" + source + "/python " + python + " " + source +
                    "/tests/python/predict_check.py " + model + " " + case_dir + " " + out + "/" +
                    id + ".nii.gz --tta " + s.tta + " --window " + s.window + " --out " +
                    dir.str("py_" + s.name + ".nii.gz"));
    std::cout << r.output;
    EXPECT_EQ(r.exit_code, 0) << "predict_check.py failed; its output is above";
  }
}

TEST(PythonExport, KdsegExportRunsThePythonPackage) {
  // `kdseg export` finds python/kdseg (here: the sources'; installed: share/kdseg/python) and
  // runs python3 -m kdseg export; a missing interpreter is named, with a non-zero exit.
  const std::string python = KDSEG_SYSTEM_PYTHON;
  if (run_command(python + " -c 'import torch'").exit_code != 0)
    GTEST_SKIP() << python << " cannot import torch (Debian's python3-torch): no export";
  ScratchDir dir("e2e_python_export");
  const std::string model = train_tiny_student(dir, "--steps 2");
  ASSERT_FALSE(model.empty());
  auto e =
      run_kdseg("export --model " + model + " --format torchscript --out " + dir.str("student.ts"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_GT(std::filesystem::file_size(dir.str("student.ts")), 0u);
  auto bad = run_kdseg("export --model " + model + " --format torchscript --out " +
                       dir.str("x.ts") + " --python /nonexistent/python3");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--python /nonexistent/python3"), std::string::npos) << bad.output;
  auto missing = run_kdseg("export --model " + dir.str("none.pt") + " --format torchscript --out " +
                           dir.str("y.ts"));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("none.pt"), std::string::npos) << missing.output;
  EXPECT_FALSE(std::filesystem::exists(dir.str("y.ts")));
}

}  // namespace
}  // namespace kdseg
