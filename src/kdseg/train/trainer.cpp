#include "kdseg/train/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kdseg/data/loader.h"
#include "kdseg/data/random.h"
#include "kdseg/dist/process_group.h"
#include "kdseg/infer/ensemble.h"
#include "kdseg/io/gzip.h"
#include "kdseg/models/checkpoint.h"
#include "kdseg/models/plan.h"
#include "kdseg/runtime/autocast.h"
#include "kdseg/runtime/runtime.h"
#include "kdseg/util/error.h"
#include "kdseg/util/progress.h"

namespace kdseg {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kLogHeader =
    "step,epoch,loss,dice_loss,bce_loss,lr,samples_per_s,wait_fraction,elapsed_s,val_dice_wt,"
    "val_dice_tc,val_dice_et,val_mean_dice";

// Keys of config.json's "train" that may differ when a run is resumed. "distributed" may, the
// world size (config.json's "world_size") may not: another world is not bit-exact. The run's
// folder, the cache's and the splits file's paths may: a run moved or copied elsewhere resumes
// there. So may --init's: a resumed run takes its weights from last.pt.
// Salts of the mean teacher's streams (train/mean_teacher.h): its unlabelled patches and the strong
// views' draws, apart from the labelled patches' (keyed by the seed alone).
constexpr uint64_t kUnlabelledSalt = 0x756e6c6162656c6cull, kStrongSalt = 0x7374726f6e677676ull;

const std::vector<std::string> kResumableKeys{
    "resume",      "steps",          "quiet",     "threads",   "workers",
    "prefetch",    "device",         "val_every", "log_every", "checkpoint_every",
    "distributed", "dist_timeout_s", "out",       "cache",     "splits",
    "init"};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(double v, const char* f = "%.6g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void write_json_atomic(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  write_file_atomic(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// Keeps the log's header and rows with step <= last_step (what the resumed checkpoint had seen).
void trim_log(const std::string& path, int64_t last_step) {
  std::ifstream in(path);
  std::string line, kept;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      kept += line + "\n";
      header = false;
      continue;
    }
    if (!line.empty() && std::stoll(line.substr(0, line.find(','))) <= last_step)
      kept += line + "\n";
  }
  write_file_atomic(path, reinterpret_cast<const uint8_t*>(kept.data()), kept.size());
}

// Soft targets made sharper (T < 1) or softer (T > 1): sigmoid(logit(p) / T); 0 and 1 stay.
at::Tensor temper(const at::Tensor& target, double t) {
  if (t == 1) return target;
  at::Tensor p = target.clamp(1e-6, 1 - 1e-6);
  at::Tensor out = torch::sigmoid(torch::log(p / (1 - p)) / t);
  return torch::where((target > 0) & (target < 1), out, target);
}

// Runs a collective of a distributed run; a failure names what the ranks were doing.
template <class F>
void collective(const std::string& during, F&& body) {
  try {
    body();
  } catch (const Error& e) {
    throw Error(e.where(), e.problem() + " (" + during + ")", e.hint());
  }
}

// Throws the same Error on every rank unless `value` is the same on all of them (two small
// collectives: the mean, then whether any rank differs from it).
void expect_same_on_all_ranks(ProcessGroup& pg, double value, const std::string& where,
                              const std::string& problem, const std::string& hint) {
  const double mean = pg.mean_across_ranks({value})[0];
  if (pg.mean_across_ranks({mean == value ? 0.0 : 1.0})[0] > 0) throw Error(where, problem, hint);
}

// A 40-bit digest of the case IDs a rank trains and validates on (exact as a double, and summable
// over thousands of ranks without rounding).
double data_digest(const TrainingData& td) {
  uint64_t h = data::mix64(td.pools.size());
  auto add = [&h](const std::string& text) {
    uint64_t f = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : text) f = (f ^ c) * 1099511628211ull;
    h = data::mix64(h ^ f);
  };
  for (const auto& pool : td.pools) {
    add("pool of weight " + std::to_string(pool.weight));  // not its path: hosts may differ
    for (const auto& c : pool.cases) add(c->id());
  }
  for (const auto& c : td.validation) add("val " + c->id());
  return static_cast<double>(h >> 24);
}

}  // namespace

TrainOptions with_paper_defaults(TrainOptions o) {
  const bool cascade = o.model == "cascade";
  if (o.optimizer == "auto") o.optimizer = cascade ? "sgd" : "adam";
  if (o.lr == 0) o.lr = o.optimizer == "sgd" ? 0.1 : 1e-4;
  if (o.schedule == "auto") o.schedule = o.optimizer == "sgd" ? "exp" : "step";
  if (o.batch == 0) o.batch = cascade ? 4 : 2;
  const PreprocessPlan paper = paper_plan(o.model);
  if (o.patch == std::array<int64_t, 3>{0, 0, 0}) o.patch = paper.patch;
  if (o.fixed_shape[0] < 0 || o.fixed_shape[1] < 0 || o.fixed_shape[2] < 0)
    o.fixed_shape = paper.fixed_shape;
  return o;
}

namespace {
json train_fields(const TrainOptions& o) {
  std::vector<json> data;
  for (const auto& d : o.data) data.push_back({{"dir", d.dir}, {"weight", d.weight}});
  const auto& a = o.augment;
  const auto& l = o.loss;
  const auto& s = o.schedule_options;
  const auto& p = o.optimizer_options;
  return {{"model", o.model},
          {"model_options", o.model_options},
          {"data", data},
          {"out", o.out},
          {"cache", o.cache},
          {"splits", o.splits},
          {"val_fraction", o.val_fraction},
          {"steps", o.steps},
          {"steps_per_epoch", o.steps_per_epoch},
          {"batch", o.batch},
          {"patch", o.patch},
          {"spacing", o.spacing},
          {"fixed_shape", o.fixed_shape},
          {"foreground_share", o.foreground_share},
          {"optimizer", o.optimizer},
          {"lr", o.lr},
          {"schedule", o.schedule},
          {"schedule_options",
           {{"drop_at", s.drop_at},
            {"drop", s.drop},
            {"gamma", s.gamma},
            {"power", s.power},
            {"warmup", s.warmup}}},
          {"optimizer_options",
           {{"beta1", p.beta1},
            {"beta2", p.beta2},
            {"eps", p.eps},
            {"momentum", p.momentum},
            {"nesterov", p.nesterov},
            {"weight_decay", p.weight_decay}}},
          {"val_every", o.val_every},
          {"val_overlap", o.val_overlap},
          {"log_every", o.log_every},
          {"checkpoint_every", o.checkpoint_every},
          {"seed", o.seed},
          {"resume", o.resume},
          {"bf16", o.bf16},
          {"augment",
           {{"enabled", a.enabled},
            {"p_scale", a.p_scale},
            {"scale", a.scale},
            {"p_rotate", a.p_rotate},
            {"rotate_deg", a.rotate_deg},
            {"p_mirror", a.p_mirror},
            {"p_shift", a.p_shift},
            {"shift", a.shift},
            {"p_contrast", a.p_contrast},
            {"contrast", a.contrast}}},
          {"loss",
           {{"batch_dice", l.batch_dice},
            {"dice_eps", l.dice_eps},
            {"dice_weight", l.dice_weight},
            {"bce_weight", l.bce_weight},
            {"vae_l2_weight", l.vae_l2_weight},
            {"vae_kl_weight", l.vae_kl_weight},
            {"deep_supervision", l.deep_supervision}}},
          {"soft_temperature", o.soft_temperature},
          {"workers", o.workers},
          {"prefetch", o.prefetch},
          {"min_confidence", o.min_confidence},
          {"drop_fraction", o.drop_fraction},
          {"threads", o.threads},
          {"device", o.device},
          {"quiet", o.quiet},
          {"distributed", o.distributed},
          {"dist_timeout_s", o.dist_timeout_s}};
}
}  // namespace

json to_json(const TrainOptions& o) {
  json j = train_fields(o);
  // Only where given: the configuration of a run made before --init existed stays equal to its
  // resume's (which compares them key by key).
  if (!o.init.empty()) j["init"] = o.init;
  if (o.mean_teacher.enabled()) {
    const auto& m = o.mean_teacher;
    const auto& st = m.strong;
    j["mean_teacher"] = {{"unlabelled", m.unlabelled},
                         {"weight", m.weight},
                         {"ema", m.ema},
                         {"threshold", m.threshold},
                         {"rampup", m.rampup},
                         {"batch", m.batch},
                         {"strong",
                          {{"noise_sd", st.noise_sd},
                           {"contrast", st.contrast},
                           {"shift", st.shift},
                           {"p_cutmix", st.p_cutmix},
                           {"cutmix_side", st.cutmix_side}}}};
  }
  return j;
}

std::array<double, 3> region_dice(const at::Tensor& probs, const at::Tensor& labels) {
  at::Tensor pred = probs.to(at::kCPU) > 0.5;
  at::Tensor ref = labels_to_regions(labels.to(at::kCPU)) > 0.5;
  std::array<double, 3> d{};
  for (int64_t r = 0; r < 3; ++r) {
    const double inter = (pred[r] & ref[r]).sum().item<double>();
    const double total = pred[r].sum().item<double>() + ref[r].sum().item<double>();
    d[r] = total == 0 ? 1.0 : 2.0 * inter / total;
  }
  return d;
}

// done.json's keys for the output channels WT, TC, ET.
constexpr std::array<const char*, 3> kRegionKeys{"wt", "tc", "et"};

std::vector<std::string> dead_region_warnings(const at::Tensor& counts, int64_t steps) {
  const at::Tensor c = counts.to(at::kCPU, at::kDouble).contiguous();
  const double* v = c.data_ptr<double>();
  std::vector<std::string> out;
  for (int64_t r = 0; r < c.size(0); ++r) {
    const double tp = v[3 * r], predicted = v[3 * r + 1], truth = v[3 * r + 2];
    if (truth == 0 || tp > 0) continue;
    const char* name = r == 0 ? "WT" : r == 1 ? "TC" : r == 2 ? "ET" : "a region";
    char text[360];
    std::snprintf(text, sizeof text,
                  "in its last %lld steps the model predicted none of the %.0f %s voxels of its "
                  "training patches (probability > 0.5 at %.0f voxels): it has not learnt %s; "
                  "train again with another --seed or a lower --lr",
                  static_cast<long long>(steps), truth, name, predicted, name);
    out.push_back(text);
  }
  return out;
}

namespace {

// The network's training outputs, under bf16 autocast when asked, as float32 for the loss.
SegOutput forward_fp32(SegNet& net, const at::Tensor& x, bool bf16, const std::string& device) {
  SegOutput o;
  {
    AutocastGuard autocast(bf16, device);
    o = net->forward(x);
  }
  o.logits = o.logits.to(at::kFloat);
  for (auto& d : o.deep) d = d.to(at::kFloat);
  if (o.recon.defined()) {
    o.recon = o.recon.to(at::kFloat);
    o.mu = o.mu.to(at::kFloat);
    o.logvar = o.logvar.to(at::kFloat);
  }
  return o;
}

}  // namespace

double time_train_steps(const TrainOptions& given, int n_steps, int n_warmup) {
  const TrainOptions opt = with_paper_defaults(given);
  json model_options = opt.model_options.is_null() ? json::object() : opt.model_options;
  if (opt.model == "resunet-vae" && !model_options.contains("vae_input_shape"))
    model_options["vae_input_shape"] = opt.patch;
  torch::manual_seed(opt.seed);
  SegNet net = make_net(opt.model, model_options);
  const torch::Device device(opt.device);
  net->to(device);
  net->train();
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value());
  OptimizerOptions optim = opt.optimizer_options;
  optim.kind = opt.optimizer;
  Optimizer optimizer(named, optim);
  const std::vector<int64_t> shape{opt.batch, 4, opt.patch[0], opt.patch[1], opt.patch[2]};
  const at::Tensor x = torch::randn(shape).to(device);
  const at::Tensor y = (torch::rand({opt.batch, 3, opt.patch[0], opt.patch[1], opt.patch[2]}) > 0.9)
                           .to(at::kFloat)
                           .to(device);
  std::vector<double> seconds;
  for (int k = 0; k < n_warmup + n_steps; ++k) {
    const auto t = Clock::now();
    optimizer.zero_grad();
    segmentation_loss(forward_fp32(net, x, opt.bf16, opt.device), y, x, {}, opt.loss)
        .total.backward();
    optimizer.step(opt.lr);
    (void)named.front().second.sum().item<double>();  // waits for an asynchronous device
    if (k >= n_warmup) seconds.push_back(seconds_since(t));
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

TrainResult train(const TrainOptions& given) {
  const TrainOptions opt = with_paper_defaults(given);
  const auto t_setup = Clock::now();
  // ---- configuration checks, before any work
  if (opt.out.empty()) throw Error("--out", "no run folder given", "e.g. --out runs/unet");
  if (opt.steps < 1) throw Error("--steps", "must be at least 1");
  if (opt.steps_per_epoch < 1) throw Error("--steps-per-epoch", "must be at least 1");
  if (opt.batch < 1) throw Error("--batch", "must be at least 1");
  if (opt.log_every < 1 || opt.checkpoint_every < 1 || opt.val_every < 0)
    throw Error("--log-every/--checkpoint-every/--val-every", "must be positive");
  if (!(opt.soft_temperature > 0)) throw Error("--soft-temperature", "must be positive");
  if (opt.bf16 && torch::Device(opt.device).is_cpu() && !cpu_has_native_bf16() &&
      !opt.allow_emulated_bf16)
    throw Error("--bf16",
                "this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 training would be "
                "emulated, many times slower than fp32",
                "train in fp32 (leave out --bf16), or add --allow-emulated-bf16 to run it anyway");
  ScheduleOptions sched = opt.schedule_options;
  sched.kind = opt.schedule;
  sched.lr = opt.lr;
  validate_schedule(sched);
  validate_augment(opt.augment);
  const MeanTeacherOptions& mto = opt.mean_teacher;
  const bool mean_teacher = mto.enabled();
  if (mean_teacher) validate_mean_teacher(mto);
  OptimizerOptions optim = opt.optimizer_options;
  optim.kind = opt.optimizer;

  json model_options = opt.model_options.is_null() ? json::object() : opt.model_options;
  if (opt.model == "resunet-vae" && !model_options.contains("vae_input_shape"))
    model_options["vae_input_shape"] = opt.patch;  // the VAE decodes training patches
  torch::manual_seed(opt.seed);
  SegNet net = make_net(opt.model, model_options);  // unknown model / options: error here
  for (int a = 0; a < 3; ++a)
    if (opt.patch[a] < 1 || opt.patch[a] % net->stride() != 0)
      throw Error("--patch",
                  "patch " + shape_text(opt.patch) + " is not a multiple of " + opt.model +
                      "'s stride " + std::to_string(net->stride()),
                  "use sides divisible by " + std::to_string(net->stride()));

  PreprocessPlan plan = paper_plan(opt.model);
  plan.spacing = opt.spacing;
  plan.fixed_shape = opt.fixed_shape;
  plan.patch = opt.patch;
  validate_plan(plan, "training plan");

  // ---- distributed: join the group (a bad environment or an absent peer fails here, before any
  // work). Every rank runs the same configuration; rank 0 alone writes.
  std::unique_ptr<ProcessGroup> pg;
  std::string device_name = opt.device;
  if (opt.distributed) {
    if (opt.dist_timeout_s < 1) throw Error("--dist-timeout", "must be at least 1 s");
    const DistEnv env = dist_env_from_environment();
    if (device_name == "cuda") device_name = "cuda:" + std::to_string(env.local_rank);
    pg = std::make_unique<ProcessGroup>(env, std::chrono::seconds(opt.dist_timeout_s), device_name);
  }
  const int64_t rank = pg ? pg->rank() : 0, world = pg ? pg->world() : 1;
  const bool rank0 = rank == 0;
  const bool talk = rank0 && !opt.quiet;  // progress lines: rank 0's

  const fs::path out(opt.out), ckpt_dir = out / "checkpoints";
  const std::string last_path = (ckpt_dir / "last.pt").string(),
                    best_path = (ckpt_dir / "best.pt").string(),
                    log_path = (out / "log.csv").string();
  json config = {{"train", to_json(opt)},
                 {"arch", opt.model},
                 {"model", net->options_json()},
                 {"plan", plan},
                 {"parameters", count_parameters(*net)},
                 {"world_size", world},
                 {"global_batch", opt.batch * world}};

  // ---- resume: the checkpoint must be this run's
  Checkpoint resumed;
  bool resuming = false;
  if (opt.resume && fs::exists(last_path)) {
    resumed = read_checkpoint(last_path);
    if (!resumed.extra.contains("train_config"))
      throw Error(last_path, "not a resumable checkpoint (no training state)");
    json saved = json::parse(resumed.extra.at("train_config").toStringRef());
    json now = config["train"];
    for (const auto& k : kResumableKeys) saved["train"].erase(k), now.erase(k);
    if (saved["train"] != now || saved["arch"] != config["arch"] ||
        saved["model"] != config["model"]) {
      std::string diff;
      for (auto it = now.begin(); it != now.end(); ++it)
        if (!saved["train"].contains(it.key()) || saved["train"][it.key()] != it.value())
          diff += (diff.empty() ? "" : ", ") + it.key();
      throw Error(last_path,
                  "--resume with a different configuration (" +
                      (diff.empty() ? std::string("model") : diff) + ")",
                  "resume with the run's own options (see " + (out / "config.json").string() +
                      "), or train into a new --out");
    }
    const int64_t saved_world = saved.value("world_size", int64_t{1});
    if (saved_world != world)
      throw Error(last_path,
                  "--resume with " + std::to_string(world) + " process(es); the run was trained " +
                      "with " + std::to_string(saved_world) +
                      " (another world size changes the arithmetic: not bit-exact)",
                  "resume with WORLD_SIZE=" + std::to_string(saved_world) +
                      (saved_world > 1 ? " and --distributed" : "") +
                      ", or train into a new --out");
    resuming = true;
  } else if (!opt.resume && fs::exists(last_path)) {
    throw Error(opt.out, "the folder already holds a training run",
                "pass --resume to continue it, or choose another --out");
  }
  // --init: checked before any work, loaded once the model is on its device.
  Checkpoint from_init;
  if (!resuming && !opt.init.empty()) {
    from_init = read_checkpoint(opt.init);
    if (from_init.arch != opt.model || from_init.model != net->options_json())
      throw Error(opt.init,
                  "--init: a " + from_init.arch + " with options " + from_init.model.dump() +
                      ", not this run's " + opt.model + " with " + net->options_json().dump(),
                  "start from a checkpoint of the same --model and --model-options");
  }
  if (pg && world > 1)
    expect_same_on_all_ranks(
        *pg, resuming ? static_cast<double>(resumed.extra.at("step").toInt()) : -1.0,
        opt.out + " (rank " + std::to_string(rank) + " of " + std::to_string(world) + ")",
        "the ranks do not resume from the same checkpoint (" +
            (resuming
                 ? "this rank resumes at step " + std::to_string(resumed.extra.at("step").toInt())
                 : std::string("this rank starts afresh")) +
            ")",
        "--resume of a distributed run needs --out on a filesystem every rank sees (or the "
        "same checkpoints/last.pt copied to each host)");
  if (resuming && fs::exists(out / "done.json")) {
    const json done = json::parse(std::ifstream((out / "done.json").string()));
    if (done.value("steps", int64_t{0}) >= opt.steps) {
      if (talk)
        std::fprintf(stderr, "train: %s already finished (%lld steps)\n", opt.out.c_str(),
                     static_cast<long long>(opt.steps));
      TrainResult r;
      r.steps = done.value("steps", int64_t{0});
      r.best_step = done.value("best_step", int64_t{-1});
      r.best_mean_dice = done.value("best_mean_dice", -1.0);
      r.tail_steps = done.value("train_hard_dice_steps", int64_t{0});
      const json tail = done.value("train_hard_dice", json::object());
      for (size_t i = 0; i < kRegionKeys.size(); ++i)
        r.train_hard_dice[i] = tail.value(kRegionKeys[i], -1.0);
      r.warnings = done.value("warnings", std::vector<std::string>{});
      return r;
    }
  }

  // ---- data (errors: empty folder, unlabelled folder, patch larger than a volume)
  TrainingDataOptions dopt;
  dopt.data = opt.data;
  dopt.cache_dir = opt.cache;
  dopt.splits_path = opt.splits.empty() ? (out / "splits.json").string() : opt.splits;
  dopt.split.seed = opt.seed;
  dopt.split.validation_fraction = opt.val_fraction;
  dopt.min_confidence = opt.min_confidence;
  dopt.drop_fraction = opt.drop_fraction;
  dopt.threads = opt.threads;
  TrainingData td;
  if (rank0) {  // distributed: rank 0 first (it writes the split and the cache), the others wait
    fs::create_directories(ckpt_dir);
    if (talk) std::fprintf(stderr, "train: preparing data (cache, split)\n");
    td = prepare_training_data(dopt, plan, opt.patch);
  }
  SamplePool unlabelled_pool;
  auto prepare_unlabelled = [&] {
    if (!mean_teacher) return;
    int built = 0;
    unlabelled_pool = prepare_unlabelled_pool(mto.unlabelled, dopt.cache_dir, plan, opt.patch,
                                              opt.threads, &built);
    td.n_built += built;
  };
  if (rank0) prepare_unlabelled();
  if (pg && world > 1) {
    collective(
        "waiting for rank 0 to prepare the data; raise --dist-timeout above its "
        "preprocessing time on a first run",
        [&] { pg->barrier(); });
    if (!rank0) {
      // Cache hits now (unless this host sees another cache). Where rank 0's split file is on a
      // filesystem this host does not see, the same split is made in memory (not written).
      if (opt.splits.empty() && !fs::exists(dopt.splits_path)) dopt.splits_path.clear();
      td = prepare_training_data(dopt, plan, opt.patch);
      prepare_unlabelled();
    }
    expect_same_on_all_ranks(
        *pg, data_digest(td),
        "--data (rank " + std::to_string(rank) + " of " + std::to_string(world) + ")",
        "the ranks see different training or validation cases",
        "every rank needs the same --data folders, split and cache plan");
  }
  if (talk)
    std::fprintf(
        stderr, "train: %zu train + %zu validation case(s)%s, %d preprocessed now\n",
        td.splits.train.size(), td.validation.size(),
        mean_teacher
            ? (" + " + std::to_string(unlabelled_pool.cases.size()) + " unlabelled").c_str()
            : "",
        td.n_built);
  // The saved plan records the spacing trained at (nnU-Net: the median of the training cases),
  // so that predict resamples inputs of another spacing.
  PreprocessPlan saved_plan = plan;
  {
    std::array<std::vector<double>, 3> sp;
    for (const auto& pool : td.pools)
      for (const auto& c : pool.cases)
        for (int a = 0; a < 3; ++a) sp[a].push_back(c->geometry().spacing[a]);
    for (int a = 0; a < 3; ++a)
      if (saved_plan.spacing[a] == 0 && !sp[a].empty() && plan.fixed_shape[0] == 0) {
        std::nth_element(sp[a].begin(), sp[a].begin() + sp[a].size() / 2, sp[a].end());
        saved_plan.spacing[a] = sp[a][sp[a].size() / 2];
      }
  }
  config["plan"] = saved_plan;
  if (rank0) write_json_atomic((out / "config.json").string(), config);

  // ---- model, optimiser, state
  const torch::Device device(device_name);
  net->to(device);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value());
  Optimizer optimizer(named, optim);
  int64_t step = 0, best_step = -1;
  double best = -1, elapsed_before = 0;
  if (resuming) {
    load_state_dict(*net, resumed.state, last_path);
    const auto& x = resumed.extra;
    optimizer.load_state(
        c10::impl::toTypedDict<std::string, at::Tensor>(x.at("optimizer").toGenericDict()),
        last_path);
    step = x.at("step").toInt();
    best = x.at("best_mean_dice").toDouble();
    best_step = x.at("best_step").toInt();
    elapsed_before = x.at("elapsed_s").toDouble();
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(x.at("rng").toTensor());
    if (rank0) trim_log(log_path, step);
    if (talk)
      std::fprintf(stderr, "train: resuming %s at step %lld\n", opt.out.c_str(),
                   static_cast<long long>(step));
  } else if (rank0) {
    std::ofstream(log_path) << kLogHeader << "\n";
  }
  if (!resuming && !opt.init.empty()) {
    load_state_dict(*net, from_init.state, opt.init);
    if (talk) std::fprintf(stderr, "train: starting from the weights of %s\n", opt.init.c_str());
  }
  if (pg && world > 1) {  // rank 0's weights everywhere (the same seed made them; this makes sure)
    std::vector<at::Tensor> state = net->parameters();
    for (const auto& b : net->buffers()) state.push_back(b);
    collective("broadcasting rank 0's initial weights", [&] { pg->broadcast(state); });
    if (talk)
      std::fprintf(stderr,
                   "train: distributed over %lld processes (%s), %lld samples per rank = global "
                   "batch %lld\n",
                   static_cast<long long>(world), distributed_backends().c_str(),
                   static_cast<long long>(opt.batch), static_cast<long long>(opt.batch * world));
  }
  // The mean teacher: the student's architecture, its weights (after --init and the broadcast)
  // or, on --resume, the teacher saved in last.pt. Made without touching the global generator,
  // which the student's run draws from.
  SegNet teacher{nullptr};
  if (mean_teacher) {
    {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      at::Tensor saved_state;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        saved_state = gen.get_state();
      }
      teacher = make_net(opt.model, model_options);  // draws from (and locks) the generator
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(saved_state);
    }
    teacher->to(device);
    if (resuming) {
      if (!resumed.extra.contains("mean_teacher"))
        throw Error(last_path,
                    "--resume of a mean-teacher run from a checkpoint without a teacher");
      load_state_dict(*teacher,
                      c10::impl::toTypedDict<std::string, at::Tensor>(
                          resumed.extra.at("mean_teacher").toGenericDict()),
                      last_path + " (mean teacher)");
    } else {
      load_state_dict(*teacher, state_dict(*net), "the student's initial weights");
    }
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  }

  auto save_last = [&](int64_t done_steps, double elapsed) {
    c10::impl::GenericDict extra(c10::StringType::get(), c10::AnyType::get());
    c10::impl::GenericDict ostate(c10::StringType::get(), c10::TensorType::get());
    for (const auto& kv : optimizer.state()) ostate.insert(kv.key(), kv.value());
    extra.insert("train_config", config.dump());
    extra.insert("optimizer", ostate);
    extra.insert("step", done_steps);
    extra.insert("best_mean_dice", best);
    extra.insert("best_step", best_step);
    extra.insert("elapsed_s", elapsed);
    extra.insert("world_size", world);
    if (mean_teacher) {
      c10::impl::GenericDict tstate(c10::StringType::get(), c10::TensorType::get());
      for (const auto& kv : state_dict(*teacher)) tstate.insert(kv.key(), kv.value());
      extra.insert("mean_teacher", tstate);
    }
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    extra.insert("rng", gen.get_state());
    save_checkpoint(last_path, *net, saved_plan, extra);
  };

  InferenceOptions vopt;
  vopt.tta = "none";
  vopt.overlap = opt.val_overlap;
  vopt.device = device_name;
  vopt.bf16 = opt.bf16;
  auto validate = [&]() -> std::array<double, 4> {
    net->eval();
    std::array<double, 4> sum{0, 0, 0, 0};
    for (const auto& c : td.validation) {
      PreparedCase pc = c->prepared();
      const auto d = region_dice(predict_image(*net, pc.image, plan, vopt), pc.labels);
      for (int r = 0; r < 3; ++r) sum[r] += d[r] / static_cast<double>(td.validation.size());
    }
    sum[3] = (sum[0] + sum[1] + sum[2]) / 3;
    net->train();
    return sum;
  };

  // ---- the loop
  SamplerOptions sopt;
  sopt.patch = opt.patch;
  sopt.batch = opt.batch;
  sopt.foreground_share = opt.foreground_share;
  sopt.seed = opt.seed;
  auto sampler = std::make_shared<const Sampler>(td.pools, sopt);
  LoaderOptions lopt;
  lopt.workers = opt.workers;
  lopt.prefetch = opt.prefetch;
  lopt.rank = rank;
  lopt.world = world;
  Loader loader(sampler, opt.augment, lopt, step);
  // The unlabelled patches: random (no label to centre on), the run's augmentation as the weak
  // view, a sampling stream of their own.
  std::unique_ptr<Loader> unlabelled_loader;
  if (mean_teacher) {
    SamplerOptions u = sopt;
    u.batch = mto.batch > 0 ? mto.batch : opt.batch;
    u.foreground_share = 0;
    u.seed = data::mix64(opt.seed ^ kUnlabelledSalt);
    unlabelled_loader = std::make_unique<Loader>(
        std::make_shared<const Sampler>(std::vector<SamplePool>{unlabelled_pool}, u), opt.augment,
        lopt, step);
  }
  double sum_unlabelled = 0, sum_confident = 0;  // this process's, over its steps
  int64_t n_unlabelled = 0;
  double row_unlabelled = 0, row_confident = 0;  // since the last progress line

  int64_t kill_at = -1;  // test hook: the process kills itself (SIGKILL) after this step
  if (const char* k = std::getenv("KDSEG_DEBUG_KILL_AFTER_STEP")) kill_at = std::atoll(k);

  TrainResult result;
  result.world = world;
  std::ofstream log;
  if (rank0) log.open(log_path, std::ios::app);
  net->train();
  const auto t0 = Clock::now();
  auto t_row = Clock::now();
  double sum_loss = 0, sum_dice = 0, sum_bce = 0, wait_total = 0;
  int64_t n_row = 0, first_step = step;
  // The hard overlap of the training patches over the last tenth of the steps (this rank's):
  // a region the model never predicts there has died (e.g. every output channel with a positive
  // weight stuck below zero), which the loss alone does not show.
  const int64_t tail_from = opt.steps - std::max<int64_t>(1, opt.steps / 10);
  at::Tensor tail_counts;
  int64_t tail_steps = 0;
  const double collective_before = pg ? pg->allreduce_seconds() : 0;
  if (talk)
    std::fprintf(stderr,
                 "train: %s, %lld parameters, %lld steps of batch %lld, patch %s (setup %s)\n",
                 opt.model.c_str(), static_cast<long long>(count_parameters(*net)),
                 static_cast<long long>(opt.steps), static_cast<long long>(opt.batch),
                 shape_text(opt.patch).c_str(), format_seconds(seconds_since(t_setup)).c_str());
  while (step < opt.steps) {
    const double lr = learning_rate(sched, step, opt.steps, opt.steps_per_epoch);
    Batch batch = loader.next();
    at::Tensor x = batch.image.to(device),
               y = temper(batch.target, opt.soft_temperature).to(device);
    at::Tensor w = batch.weight.defined() ? batch.weight.to(device) : at::Tensor();
    optimizer.zero_grad();
    // Several ranks: each rank's own random stream per step (dropout, the VAE's noise), the same
    // after a resume.
    if (world > 1) torch::manual_seed(data::sample_key(data::mix64(opt.seed), step, rank));
    LossTerms loss;
    {
      const SegOutput o = forward_fp32(net, x, opt.bf16, device_name);
      loss = segmentation_loss(o, y, x, w, opt.loss);
      if (step >= tail_from) {
        const at::Tensor c = hard_overlap_counts(o.logits, y, w);
        tail_counts = tail_counts.defined() ? tail_counts + c : c;
        ++tail_steps;
      }
    }
    loss.total.backward();
    if (mean_teacher) {  // the unlabelled term: its own backward, so one graph is alive at a time
      const Batch ub = unlabelled_loader->next();
      const double lambda = consistency_weight(mto, step, opt.steps);
      ConsistencyTargets ct;
      {
        torch::NoGradGuard no_grad;
        ct = consistency_targets(
            forward_fp32(teacher, ub.image.to(device), opt.bf16, device_name).logits,
            mto.threshold);
      }
      const StrongView sv = strong_view(
          ub.image, data::sample_key(data::mix64(opt.seed ^ kStrongSalt), step, rank), mto.strong);
      const at::Tensor xs = sv.image.to(device), ys = mix_like(ct.target, sv.mixed),
                       ws = mix_like(ct.weight, sv.mixed);
      const LossTerms ul =
          segmentation_loss(forward_fp32(net, xs, opt.bf16, device_name), ys, xs, ws, opt.loss);
      if (lambda > 0) (ul.total * lambda).backward();
      const double u = ul.total.item<double>();
      const double confident = ws.mean().item<double>();
      sum_unlabelled += u;
      sum_confident += confident;
      row_unlabelled += u;
      row_confident += confident;
      ++n_unlabelled;
      loss.total = loss.total.detach() + lambda * u;  // what the step minimised, for the log
    }
    double l = 0, l_dice = 0, l_bce = 0;
    if (pg) {
      // One collective: every gradient (undefined ones as zeros) + the loss terms + which
      // gradients were defined, averaged over the ranks. A gradient no rank had stays undefined,
      // as in one process.
      std::vector<at::Tensor> packed;
      std::vector<float> had(named.size(), 1.0f);
      for (size_t i = 0; i < named.size(); ++i) {
        at::Tensor& p = named[i].second;
        if (!p.grad().defined()) {
          p.mutable_grad() = torch::zeros_like(p);
          had[i] = 0;
        }
        packed.push_back(p.grad());
      }
      packed.push_back(
          torch::cat({torch::stack({loss.total.detach(), loss.dice.detach(), loss.bce.detach()})
                          .to(at::kFloat),
                      torch::tensor(had).to(device)}));
      collective("step " + std::to_string(step + 1) + ": averaging the gradients",
                 [&] { pg->allreduce_mean(packed); });
      const at::Tensor stats = packed.back().to(at::kCPU, at::kDouble);
      const double* v = stats.data_ptr<double>();
      l = v[0], l_dice = v[1], l_bce = v[2];
      for (size_t i = 0; i < named.size(); ++i)
        if (v[3 + i] == 0) named[i].second.mutable_grad() = at::Tensor();
    } else {
      l = loss.total.item<double>();
      l_dice = loss.dice.item<double>();
      l_bce = loss.bce.item<double>();
    }
    optimizer.step(lr);
    if (mean_teacher) update_teacher(*teacher, *net, teacher_decay(mto, step));
    if (!std::isfinite(l))  // the mean over the ranks: every rank stops here together
      throw Error(opt.out, "the loss is not finite at step " + std::to_string(step),
                  "lower --lr, or check the data (kdseg check)");
    result.losses.push_back(l);
    sum_loss += l;
    sum_dice += l_dice;
    sum_bce += l_bce;
    ++n_row;
    ++step;

    const bool last = step == opt.steps;
    std::string val_cells = ",,,";
    if ((opt.val_every > 0 && step % opt.val_every == 0) || last) {
      if (!td.validation.empty()) {
        std::array<double, 4> v{};
        if (rank0) v = validate();  // distributed: rank 0 validates, the others wait for its Dice
        if (pg && world > 1) {
          std::vector<at::Tensor> shared{
              torch::tensor(std::vector<double>(v.begin(), v.end()), at::kDouble).to(device)};
          collective("step " + std::to_string(step) + ": waiting for rank 0's validation",
                     [&] { pg->broadcast(shared); });
          const at::Tensor cpu = shared[0].cpu();
          for (int i = 0; i < 4; ++i) v[i] = cpu.data_ptr<double>()[i];
        }
        val_cells = fmt(v[0]) + "," + fmt(v[1]) + "," + fmt(v[2]) + "," + fmt(v[3]);
        result.val_steps.push_back(step);
        result.val_mean_dice.push_back(v[3]);
        if (v[3] > best) {
          best = v[3];
          best_step = step;
          if (rank0) save_checkpoint(best_path, *net, saved_plan);
        }
        if (talk)
          std::fprintf(stderr,
                       "train: step %lld validation Dice WT %.4f TC %.4f ET %.4f mean %.4f (best "
                       "%.4f at %lld)\n",
                       static_cast<long long>(step), v[0], v[1], v[2], v[3], best,
                       static_cast<long long>(best_step));
      } else if (last) {
        best_step = step;  // nothing to validate on: best = last
        if (rank0) save_checkpoint(best_path, *net, saved_plan);
      }
    }
    if (step % opt.log_every == 0 || last || val_cells != ",,,") {
      const double row_s = seconds_since(t_row);
      const double wait = loader.take_wait_seconds();
      wait_total += wait;
      const double elapsed = seconds_since(t0);
      const double per_step = elapsed / static_cast<double>(step - first_step);
      const double samples = static_cast<double>(n_row * opt.batch * world);  // all ranks'
      if (rank0) {
        log << step << "," << fmt(static_cast<double>(step) / opt.steps_per_epoch, "%.3f") << ","
            << fmt(sum_loss / n_row) << "," << fmt(sum_dice / n_row) << "," << fmt(sum_bce / n_row)
            << "," << fmt(lr) << "," << fmt(samples / row_s, "%.4g") << ","
            << fmt(wait / row_s, "%.4f") << "," << fmt(elapsed_before + elapsed, "%.2f") << ","
            << val_cells << "\n";
        log.flush();
      }
      if (talk) {
        char unlabelled_text[96] = "";
        if (mean_teacher && n_row > 0)
          std::snprintf(unlabelled_text, sizeof unlabelled_text,
                        "  unlabelled loss %.4f (confident %.0f%%)", row_unlabelled / n_row,
                        100 * row_confident / n_row);
        std::fprintf(
            stderr,
            "train: step %lld/%lld  loss %.4f%s  lr %.2e  %.2f samples/s  wait %.1f%%  ETA %s\n",
            static_cast<long long>(step), static_cast<long long>(opt.steps), sum_loss / n_row,
            unlabelled_text, lr, samples / row_s, 100 * wait / row_s,
            format_seconds(per_step * static_cast<double>(opt.steps - step)).c_str());
      }
      sum_loss = sum_dice = sum_bce = row_unlabelled = row_confident = 0;
      n_row = 0;
      t_row = Clock::now();
    }
    if (rank0 && (step % opt.checkpoint_every == 0 || last))
      save_last(step, elapsed_before + seconds_since(t0));
    if (step == kill_at) std::raise(SIGKILL);
  }
  result.seconds = seconds_since(t0);
  result.wait_fraction = result.seconds > 0 ? wait_total / result.seconds : 0;
  result.steps = step;
  result.best_step = best_step;
  result.best_mean_dice = best;
  result.collective_seconds = pg ? pg->allreduce_seconds() - collective_before : 0;
  json tail = json::object();
  if (tail_counts.defined()) {
    const at::Tensor c = tail_counts.to(at::kCPU).contiguous();
    const double* v = c.data_ptr<double>();
    result.tail_steps = tail_steps;
    for (size_t r = 0; r < kRegionKeys.size() && static_cast<int64_t>(r) < c.size(0); ++r) {
      const double tp = v[3 * r], predicted = v[3 * r + 1], truth = v[3 * r + 2];
      const double dice = predicted + truth > 0 ? 2 * tp / (predicted + truth) : 1.0;
      result.train_hard_dice[r] = dice;
      tail[kRegionKeys[r]] = dice;
    }
    result.warnings = dead_region_warnings(c, tail_steps);
  }
  if (rank0) {
    // The samples each data folder gave over the whole run (every rank's, before and after any
    // resume): the draws depend only on (seed, step, index), so they are counted again here.
    std::vector<int64_t> drawn(td.pools.size(), 0);
    for (int64_t s = 0; s < step; ++s)
      for (int64_t i = 0; i < opt.batch * world; ++i) ++drawn[sampler->draw(s, i).pool];
    json per_folder = json::object();
    for (size_t k = 0; k < td.pools.size(); ++k)
      per_folder[td.pools[k].name] = {{"samples", drawn[k]},
                                      {"weight", td.pools[k].weight},
                                      {"cases", td.pools[k].cases.size()}};
    if (mean_teacher) save_checkpoint((ckpt_dir / "teacher.pt").string(), *teacher, saved_plan);
    json done = {{"steps", step},
                 {"best_step", best_step},
                 {"best_mean_dice", best},
                 {"seconds", elapsed_before + result.seconds},
                 {"wait_fraction", result.wait_fraction},
                 {"world_size", world},
                 {"collective_fraction",
                  result.seconds > 0 ? result.collective_seconds / result.seconds : 0},
                 {"train_hard_dice", tail},
                 {"train_hard_dice_steps", tail_steps},
                 {"data_folders", per_folder},
                 {"warnings", result.warnings}};
    if (mean_teacher)
      done["mean_teacher"] = {
          {"unlabelled_cases", unlabelled_pool.cases.size()},
          {"unlabelled_loss", n_unlabelled ? sum_unlabelled / n_unlabelled : 0.0},
          {"confident_share", n_unlabelled ? sum_confident / n_unlabelled : 0.0},
          {"steps_counted", n_unlabelled},
          {"teacher", (ckpt_dir / "teacher.pt").string()}};
    write_json_atomic((out / "done.json").string(), done);
    for (const auto& w : result.warnings) std::fprintf(stderr, "train: warning: %s\n", w.c_str());
  }
  // Every rank ends together: a failure of rank 0's last writes fails the others too.
  if (pg && world > 1) collective("waiting for rank 0's last writes", [&] { pg->barrier(); });
  if (talk) {
    char best_text[96] = "no validation cases: best.pt = last.pt";
    if (!td.validation.empty())
      std::snprintf(best_text, sizeof best_text, "best mean Dice %.4f at step %lld", best,
                    static_cast<long long>(best_step));
    std::fprintf(stderr, "train: done, %lld steps in %s (waited for data %.1f%%), %s\n",
                 static_cast<long long>(step), format_seconds(result.seconds).c_str(),
                 100 * result.wait_fraction, best_text);
  }
  return result;
}

}  // namespace kdseg
