// kdseg train --model NAME --data DIR[:W] ... --out runs/NAME: one network, trained
// (docs/design.md §4).
#include "kdseg/cmd_train.h"

#include <iostream>
#include <memory>

#include "kdseg/cli.h"
#include "kdseg/util/error.h"

namespace kdseg::cli {

CLI::App* add_train_flags(CLI::App& app, TrainOptions& opt, RuntimeOptions& runtime) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train one network on labelled (and pseudo-labelled) folders; writes config.json, "
      "splits.json, log.csv, checkpoints/{last,best}.pt and done.json into --out");
  auto data = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--model", opt.model, "unet, resunet, resunet-vae, cascade or student")
      ->capture_default_str();
  cmd->add_option_function<std::string>(
      "--model-options",
      [&opt](const std::string& text) {
        try {
          opt.model_options = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
          throw CLI::ValidationError("--model-options", "not JSON: " + std::string(e.what()));
        }
      },
      "Architecture options as JSON (missing keys: paper size), e.g. "
      "'{\"widths\":[8,16,32,64]}'; see kdseg models");
  cmd->add_option_function<std::vector<std::string>>(
         "--data",
         [&opt](const std::vector<std::string>& dirs) {
           opt.data.clear();
           for (const auto& d : dirs) opt.data.push_back(parse_data_arg(d));
         },
         "Data folder DIR or DIR:W (W: its share of the samples); repeat for several, e.g. "
         "--data cohort/labeled --data pseudo:0.5. Without any :W the folders' cases are pooled "
         "(each folder weighs its number of cases); with some, a folder without :W weighs 1")
      ->required()
      ->take_all();
  cmd->add_option("--out", opt.out, "Run folder")->required();
  cmd->add_option("--steps", opt.steps, "Optimiser steps")->capture_default_str();
  cmd->add_option("--steps-per-epoch", opt.steps_per_epoch, "Steps per epoch (schedules, log)")
      ->capture_default_str();
  cmd->add_option("--batch", opt.batch, "Samples per step; 0 = the paper's (2; cascade 4)")
      ->capture_default_str();
  cmd->add_option("--patch", opt.patch, "Patch D,H,W in voxels; 0,0,0 = the paper's")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--spacing", opt.spacing, "Resample to this spacing (mm); 0 = keep the data's")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--fixed-shape", opt.fixed_shape,
                  "Resample the brain box to D,H,W voxels; -1 = the paper's (cascade 128³), "
                  "0 = none")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--foreground-share", opt.foreground_share, "Share of patches centred on tumour")
      ->capture_default_str();
  cmd->add_option("--optimizer", opt.optimizer, "adam, sgd or auto (the paper's for the model)")
      ->capture_default_str();
  cmd->add_option("--lr", opt.lr, "Initial learning rate; 0 = the paper's (Adam 1e-4, SGD 0.1)")
      ->capture_default_str();
  cmd->add_option("--schedule", opt.schedule,
                  "constant, step (x drop at drop-at), exp (x gamma per epoch), poly, or auto")
      ->capture_default_str();
  auto& s = opt.schedule_options;
  cmd->add_option("--lr-drop-at", s.drop_at, "step: share of the steps")->capture_default_str();
  cmd->add_option("--lr-drop", s.drop, "step: factor")->capture_default_str();
  cmd->add_option("--lr-gamma", s.gamma, "exp: factor per epoch")->capture_default_str();
  cmd->add_option("--lr-power", s.power, "poly: exponent")->capture_default_str();
  cmd->add_option("--warmup", s.warmup, "Linear warm-up steps")->capture_default_str();
  auto& o = opt.optimizer_options;
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  cmd->add_flag("--nesterov", o.nesterov, "SGD with Nesterov momentum");
  cmd->add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
  cmd->add_option("--val-every", opt.val_every, "Validate every N steps (0: at the end only)")
      ->capture_default_str();
  cmd->add_option("--val-fraction", opt.val_fraction,
                  "Share of labelled cases validated on (new splits)")
      ->capture_default_str();
  cmd->add_option("--val-overlap", opt.val_overlap, "Sliding-window overlap in validation")
      ->capture_default_str();
  cmd->add_option("--log-every", opt.log_every, "A log row and progress line every N steps")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", opt.checkpoint_every, "last.pt every N steps")
      ->capture_default_str();
  cmd->add_option("--seed", opt.seed, "Seed of initialisation, split and sampling")
      ->capture_default_str();
  cmd->add_flag("--resume", opt.resume, "Continue the run in --out from checkpoints/last.pt");
  cmd->add_option("--init", opt.init,
                  "Start from the weights of this checkpoint (same --model and options, e.g. a "
                  "student to fine-tune on labelled cases); the optimiser starts afresh");
  cmd->add_flag("--bf16", opt.bf16,
                "bf16 autocast (off by default; refused on a CPU without native bf16 unless "
                "--allow-emulated-bf16)");
  cmd->add_flag("--allow-emulated-bf16", opt.allow_emulated_bf16,
                "Train with --bf16 on a CPU without native bf16 (many times slower than fp32)");
  cmd->add_option("--cache", opt.cache, "Preprocessing cache folder (default: user cache)");
  cmd->add_option("--splits", opt.splits,
                  "splits.json to use or make (default: <out>/splits.json)");
  cmd->add_option("--min-confidence", opt.min_confidence,
                  "Leave out pseudo-labelled cases less confident than this")
      ->capture_default_str();
  cmd->add_option("--drop-fraction", opt.drop_fraction,
                  "Then leave out this share of the least confident pseudo-labelled cases")
      ->capture_default_str();
  cmd->add_option("--soft-temperature", opt.soft_temperature,
                  "Soft targets p -> sigmoid(logit(p)/T)")
      ->capture_default_str();
  cmd->add_option("--workers", opt.workers, "Loader threads")->capture_default_str();
  cmd->add_option("--prefetch", opt.prefetch, "Batches made ahead")->capture_default_str();
  auto& a = opt.augment;
  cmd->add_flag("!--no-augment", a.enabled, "No augmentation");
  cmd->add_option("--aug-p-scale", a.p_scale, "Probability of scaling")->capture_default_str();
  cmd->add_option("--aug-scale", a.scale, "Zoom range lo,hi")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--aug-p-rotate", a.p_rotate, "Probability of rotating")->capture_default_str();
  cmd->add_option("--aug-rotate", a.rotate_deg, "Max degrees about D,H,W")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--aug-p-mirror", a.p_mirror, "Probability of each X and Y flip")
      ->capture_default_str();
  cmd->add_option("--aug-p-shift", a.p_shift, "Probability of the intensity shift")
      ->capture_default_str();
  cmd->add_option("--aug-shift", a.shift, "Intensity shift range (z units)")->capture_default_str();
  cmd->add_option("--aug-p-contrast", a.p_contrast, "Probability of the contrast change")
      ->capture_default_str();
  cmd->add_option("--aug-contrast", a.contrast, "Contrast factor range lo,hi")
      ->delimiter(',')
      ->capture_default_str();
  auto& l = opt.loss;
  cmd->add_flag("--batch-dice", l.batch_dice, "Dice over the whole batch (the authors' code)");
  cmd->add_option("--dice-weight", l.dice_weight, "Weight of the soft Dice term")
      ->capture_default_str();
  cmd->add_option("--bce-weight", l.bce_weight, "Weight of the BCE term")->capture_default_str();
  cmd->add_option("--vae-l2-weight", l.vae_l2_weight,
                  "resunet-vae: weight of the reconstruction term (mean squared error)")
      ->capture_default_str();
  cmd->add_option("--vae-kl-weight", l.vae_kl_weight,
                  "resunet-vae: weight of the KL term. kdseg divides the KL sum by the input's "
                  "C*D*H*W elements, Myronenko by its D*H*W voxels: with 4 channels 0.4 here is "
                  "his 0.1")
      ->capture_default_str();
  auto& mt = opt.mean_teacher;
  cmd->add_option("--unlabelled", mt.unlabelled,
                  "Folder of unlabelled cases for an online mean teacher (repeat for several): an "
                  "exponential moving average of the student labels weak views of their patches, "
                  "the student learns its confident voxels from strong views (docs/training.md)")
      ->take_all();
  cmd->add_option("--mt-weight", mt.weight, "Mean teacher: weight of the unlabelled loss")
      ->capture_default_str();
  cmd->add_option("--mt-ema", mt.ema, "Mean teacher: the teacher's decay per step")
      ->capture_default_str();
  cmd->add_option("--mt-threshold", mt.threshold,
                  "Mean teacher: confidence max(p, 1-p) a voxel needs to be a target")
      ->capture_default_str();
  cmd->add_option("--mt-rampup", mt.rampup,
                  "Mean teacher: share of the steps over which the weight rises to --mt-weight")
      ->capture_default_str();
  cmd->add_option("--mt-batch", mt.batch, "Mean teacher: unlabelled patches per step; 0 = --batch")
      ->capture_default_str();
  cmd->add_option("--mt-noise", mt.strong.noise_sd, "Strong view: Gaussian noise (z units)")
      ->capture_default_str();
  cmd->add_option("--mt-contrast", mt.strong.contrast, "Strong view: contrast factor range lo,hi")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--mt-shift", mt.strong.shift, "Strong view: intensity shift range (z units)")
      ->capture_default_str();
  cmd->add_option("--mt-p-cutmix", mt.strong.p_cutmix,
                  "Strong view: probability of a box from the batch's next patch (CutMix)")
      ->capture_default_str();
  cmd->add_option("--mt-cutmix-side", mt.strong.cutmix_side,
                  "Strong view: the box's side as a share of the patch's, lo,hi")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_flag("--quiet", opt.quiet, "No progress lines");
  cmd->add_flag("--distributed", opt.distributed,
                "Data-parallel training over the processes of a torchrun-style launch (each "
                "reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK); --batch is per "
                "process, rank 0 writes the run folder");
  cmd->add_option("--dist-timeout", opt.dist_timeout_s,
                  "Seconds a process waits for the others (each step, rank 0's data preparation "
                  "and validation) before it fails")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_common_flags(cmd, runtime);
  return cmd;
}

void add_train_command(CLI::App& app) {
  auto opt = std::make_shared<TrainOptions>();
  auto runtime = std::make_shared<RuntimeOptions>();
  CLI::App* cmd = add_train_flags(app, *opt, *runtime);
  cmd->callback([opt, runtime] {
    opt->device = apply_runtime_flags(*runtime);
    opt->threads = runtime->threads;
    const TrainResult r = train(*opt);  // writes <out>/config.json with every resolved option
    std::cout << "train: " << opt->out << ": " << r.steps << " steps, ";
    if (r.best_mean_dice < 0)  // nothing was validated
      std::cout << "no validation (best.pt = last.pt)\n";
    else
      std::cout << "best validation mean Dice " << r.best_mean_dice << " at step " << r.best_step
                << "\n";
  });
}

}  // namespace kdseg::cli
