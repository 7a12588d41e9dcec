// kdseg predict --model CKPT [--model CKPT2 ...] --in DIR --out DIR: segment cases with one
// network or an ensemble; kdseg pseudo-label: the same over unlabelled cases, written as a
// pseudo-labelled dataset (docs/design.md §2).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "kdseg/cli.h"
#include "kdseg/cmd_train.h"
#include "kdseg/runtime/runtime.h"
#include "kdseg/util/error.h"

namespace kdseg::cli {
namespace fs = std::filesystem;

void add_inference_flags(CLI::App* cmd, PredictOptions& opt, std::string& precision) {
  cmd->add_option("--model", opt.models,
                  "Checkpoint (repeat for an ensemble; architectures may differ)")
      ->required();
  cmd->add_option("--weights", opt.weights, "One weight per --model (default: equal)");
  cmd->add_option("--in", opt.in,
                  "Cases in any layout (BraTS 2018-2021/2023, MSD, nnU-Net raw) or one case");
  cmd->add_option("--out", opt.out, "Output folder (a .nii.gz file with --t1 ...)")->required();
  auto& i = opt.inference;
  cmd->add_option("--tta", i.tta, "Mirror test-time augmentation: none, xy (4 flips), all (8)")
      ->capture_default_str();
  cmd->add_flag("--fuse-tta", i.fuse_tta, "Run a window's flips as one batch (more memory)");
  cmd->add_option("--overlap", i.overlap, "Sliding-window overlap in [0,1)")->capture_default_str();
  cmd->add_option("--window", i.window,
                  "auto (whole up to 8M voxels, else plan), plan (the checkpoint's patch), "
                  "whole (the whole crop at once) or DxHxW")
      ->capture_default_str();
  cmd->add_option("--window-batch", i.window_batch, "Windows per forward pass")
      ->capture_default_str();
  cmd->add_option("--precision", precision,
                  "fp32, bf16 (autocast), or auto: bf16 where the device computes it natively "
                  "(a CPU with AVX-512 BF16 or AMX; an Ampere or later GPU), else fp32")
      ->capture_default_str();
  cmd->add_flag_callback(
      "--bf16", [&precision] { precision = "bf16"; }, "Same as --precision bf16");
  cmd->add_flag("--allow-emulated-bf16", opt.inference.allow_emulated_bf16,
                "Run --precision bf16 on a CPU without native bf16 (refused otherwise: emulated, "
                "it is many times slower than fp32)");
  cmd->add_option("--engine", i.engine,
                  "A student, unet or resunet(-vae) on a CPU: auto (oneDNN where this build "
                  "and CPU can, else LibTorch), torch, or onednn")
      ->capture_default_str();
  cmd->add_option("--threshold", opt.threshold, "Region probability threshold")
      ->capture_default_str();
  cmd->add_option("--et-min-mm3", opt.post.et_min_mm3,
                  "ET smaller than this (mm³) becomes necrosis (1); 0 = off")
      ->capture_default_str();
  cmd->add_option("--min-component-fraction", opt.post.min_component_fraction,
                  "Remove tumour components below this share of the tumour; 0 = off")
      ->capture_default_str();
  cmd->add_option("--min-component-mm3", opt.post.min_component_mm3,
                  "Remove tumour components below this volume (mm³); 0 = off")
      ->capture_default_str();
  cmd->add_flag("--overwrite", opt.overwrite, "Redo cases whose output exists");
  cmd->add_flag("--quiet", opt.quiet, "No per-case progress");
}

nlohmann::json apply_precision(const std::string& command, const std::string& precision,
                               PredictOptions& opt) {
  const PrecisionChoice c =
      resolve_precision(precision, opt.inference.device, opt.inference.allow_emulated_bf16);
  opt.inference.bf16 = c.bf16;
  if (!opt.quiet)
    std::fprintf(stderr, "%s: precision %s (%s)\n", command.c_str(), c.name.c_str(), c.why.c_str());
  return {{"precision", c.name}, {"precision_why", c.why}};
}

// How the models ran (Ensemble::engines, ::tta), beside the precision in "resolved".
void record_engines(nlohmann::json& resolved, const PredictReport& r) {
  resolved["engines"] = r.engines;
  resolved["tta"] = r.tta;
}

CLI::App* add_predict_flags(CLI::App& app, PredictOptions& opt, std::string& precision,
                            RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "predict",
      "Segment every case of a folder with one checkpoint or an ensemble; writes <ID>.nii.gz "
      "on each input's grid, in its label convention (BraTS submission format)");
  add_inference_flags(cmd, opt, precision);
  const char* names[] = {"--t1", "--t1ce", "--t2", "--flair"};
  const char* what[] = {"T1", "T1ce (T1 with contrast)", "T2", "FLAIR"};
  for (int m = 0; m < 4; ++m)
    cmd->add_option(names[m], opt.files[m],
                    std::string("One case's ") + what[m] +
                        " file, any name (instead of --in; --out is then the label map's file)")
        ->excludes("--in");
  cmd->add_flag("--save-probs", opt.save_probs,
                "Also write <ID>_prob.nii.gz (WT, TC, ET probabilities, uint8 x 1/255)");
  cmd->add_option("--labels", opt.labels,
                  "Label convention written: auto (the input's; brats2021 for --t1 ... files), "
                  "brats2021, brats2023, brats2024 (the same values: never RC), msd, nnunet "
                  "(1 ED, 2 NCR, 3 ET)")
      ->capture_default_str();
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_predict_command(CLI::App& app) {
  auto opt = std::make_shared<PredictOptions>();
  auto precision = std::make_shared<std::string>("auto");
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_predict_flags(app, *opt, *precision, *runtime);
  cmd->callback([opt, precision, runtime, cmd] {
    opt->inference.device = apply_runtime_flags(*runtime);
    nlohmann::json resolved = apply_precision("predict", *precision, *opt);
    const bool one_case = std::any_of(opt->files.begin(), opt->files.end(),
                                      [](const std::string& f) { return !f.empty(); });
    if (!one_case && opt->in.empty())
      throw Error("kdseg predict", "nothing to segment",
                  "give --in FOLDER, or one case's --t1 --t1ce --t2 --flair files");
    if (one_case) {
      const PredictReport r = predict_files(*opt);
      record_engines(resolved, r);
      // The resolved options beside the label map: <stem>.config.json.
      const fs::path out(opt->out);
      const std::string config =
          (out.parent_path() / (nifti_stem(out.filename().string()) + ".config.json")).string();
      if (r.failures.empty()) write_resolved_config(cmd, config, resolved);
      report_failures("predict", r.failures, "failed");
      std::cout << "predict: wrote " << opt->out << "\n";
      return;
    }
    const PredictReport r = predict_folder(*opt);
    record_engines(resolved, r);
    write_resolved_config(cmd, (fs::path(opt->out) / "config.json").string(), resolved);
    std::cout << "predict: " << r.written.size() << " case(s) written, " << r.skipped.size()
              << " already done, in " << opt->out << "\n";
    report_failures("predict", r.failures, "failed (listed above); the others are in " + opt->out);
  });
}

CLI::App* add_pseudo_label_flags(CLI::App& app, PseudoLabelOptions& opt, std::string& shard,
                                 std::string& precision, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "pseudo-label",
      "Label unlabelled cases with an ensemble and write a pseudo-labelled dataset "
      "(images, <ID>_seg, optional soft targets and ignore masks, dataset.json) that "
      "kdseg train --data reads");
  add_inference_flags(cmd, opt.predict, precision);
  cmd->get_option("--in")->required();
  cmd->add_option("--target", opt.target, "hard (thresholded labels) or soft (also probabilities)")
      ->capture_default_str();
  cmd->add_option("--ignore-band", opt.ignore_band,
                  "Ignore mask where a probability is within this of the threshold; 0 = none")
      ->capture_default_str();
  cmd->add_flag("--soft-with-ignore-band", opt.soft_with_ignore,
                "Allow --target soft with --ignore-band (refused otherwise: the mask removes the "
                "loss where soft targets differ from hard ones)");
  cmd->add_option("--shard", shard, "i/N: this machine's share (case k goes to shard k mod N)")
      ->capture_default_str();
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_pseudo_label_command(CLI::App& app) {
  auto opt = std::make_shared<PseudoLabelOptions>();
  auto shard = std::make_shared<std::string>("0/1");
  auto precision = std::make_shared<std::string>("auto");
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_pseudo_label_flags(app, *opt, *shard, *precision, *runtime);
  cmd->callback([opt, shard, precision, runtime, cmd] {
    opt->predict.inference.device = apply_runtime_flags(*runtime);
    nlohmann::json resolved = apply_precision("pseudo-label", *precision, opt->predict);
    std::tie(opt->shard, opt->n_shards) = parse_shard(*shard);
    const PseudoLabelReport r = pseudo_label(*opt);
    record_engines(resolved, r.predict);
    write_resolved_config(cmd, (fs::path(opt->predict.out) / "config.json").string(), resolved);
    std::cout << "pseudo-label: " << r.predict.written.size() << " case(s) labelled, "
              << r.predict.skipped.size() << " already done; " << r.dataset_json << " lists "
              << r.n_cases << " case(s)\n";
    report_failures("pseudo-label", r.predict.failures,
                    "failed (listed above); the others are in " + opt->predict.out);
  });
}

}  // namespace kdseg::cli
