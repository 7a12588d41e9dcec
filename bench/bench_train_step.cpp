// One training step of the paper-size student (or another network) and one augmented training
// sample (issue 9, goal 2), each against a baseline measured in the same process.
//
// Step: forward (fp32, or bf16 autocast), kdseg::segmentation_loss (soft Dice + BCE) on nested
// sphere targets, backward, kdseg::Optimizer Adam step (lr 1e-4), on a fixed (B,4,patch) input
// already on the device. s/step median and best after --warmup steps; peak memory: resident set
// (CPU) or CUDA max allocated. On the CPU with neither --bf16 nor --precision, fp32 and bf16 are
// both run, interleaved step by step, fp32 the baseline; the peak-memory column then comes from
// one subprocess per precision (ru_maxrss is process-wide), unless --no-subprocess.
// --aten-baseline adds "fp32-aten" as the first row and the baseline: fp32 with LibTorch's
// convolutions for the narrow ones too (the first convolution, 4 channels in, and the student's
// head, 3 out; kdseg::narrow_conv3d runs them otherwise), interleaved step by step with the rest.
//
// Sample (CPU only, one thread): kdseg::make_sample of a 144×144×128 patch of a preprocessed case
// with scaling, rotation, both mirrors and the intensity transforms forced on (every draw
// resamples), against the grid_sample implementation kdseg used before (rebuilt here as the
// in-process baseline: sub-box extraction, one-hot regions, kdseg::affine_resample_grid_sample of
// all channels, thresholds, intensity via torch::where); their outputs are compared. bench/cpu.sh
// runs the Python reference (bench/reference/train_reference.py --what aug) in the same command.
//
//   bench_train_step [--patch 144,144,128] [--batch 1] [--steps 3] [--warmup 1] [--threads N]
//                    [--model student] [--case DIR] [--aug-samples 4] [--no-aug] [--json FILE]
//                    [--precision fp32|bf16|both|fp32-aten] [--aten-baseline]
//   bench_train_step --device cuda [--bf16] --patch 128 --batch 2 --json FILE   (bench/gpu.sh)
//   bench_train_step --smoke --json FILE      (CTest: tiny model, 32³, 1 step, 2 samples)
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_common.h"
#include "kdseg/data/augment.h"
#include "kdseg/data/cache.h"
#include "kdseg/data/preprocess.h"
#include "kdseg/io/dataset.h"
#include "kdseg/io/gzip.h"
#include "kdseg/models/narrow_conv.h"
#include "kdseg/models/net.h"
#include "kdseg/models/registry.h"
#include "kdseg/train/loss.h"
#include "kdseg/train/optimizer.h"
#include "kdseg/util/memory.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::array<int64_t, 3> parse_patch(const std::string& text) {
  std::vector<int64_t> v;
  std::string cur;
  for (char ch : text + ",") {
    if (ch == ',' || ch == 'x') {
      if (!cur.empty()) v.push_back(std::stoll(cur));
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (v.size() == 1) v = {v[0], v[0], v[0]};
  if (v.size() != 3) throw std::runtime_error("--patch: one size or D,H,W, got " + text);
  return {v[0], v[1], v[2]};
}

// (B,3,D,H,W) WT ⊇ TC ⊇ ET: nested spheres (radii 30, 18, 10 voxels, scaled to the patch).
at::Tensor sphere_targets(int64_t batch, const std::array<int64_t, 3>& p) {
  auto axis = [&](int a) {
    std::vector<int64_t> shape{1, 1, 1};
    shape[a] = p[a];
    return torch::arange(p[a], torch::kFloat32).view(shape);
  };
  const double scale = std::min({p[0], p[1], p[2]}) / 128.0;
  std::vector<at::Tensor> samples;
  for (int64_t b = 0; b < batch; ++b) {
    const double f = 0.4 + 0.2 * static_cast<double>(b) / std::max<int64_t>(1, batch);
    at::Tensor r = ((axis(0) - f * p[0]).pow(2) + (axis(1) - f * p[1]).pow(2) +
                    (axis(2) - (1 - f) * p[2]).pow(2))
                       .sqrt();
    samples.push_back(
        torch::stack({(r < 30 * scale), (r < 18 * scale), (r < 10 * scale)}).to(torch::kFloat32));
  }
  return torch::stack(samples);
}

struct Trainer {
  std::string name;
  bool bf16 = false;
  bool aten = false;  // LibTorch's convolutions for the narrow ones too (kdseg::NarrowConvOff)
  kdseg::SegNet net{nullptr};
  std::unique_ptr<kdseg::Optimizer> opt;
  std::vector<double> step_s, loss;
  double peak_rss_gb = -1, cuda_gb = -1;
};

Trainer make_trainer(const std::string& name, bool bf16, const std::string& arch,
                     const nlohmann::json& config, const std::string& device) {
  Trainer t;
  t.name = name;
  t.bf16 = bf16;
  t.aten = name == "fp32-aten";
  torch::manual_seed(0);
  t.net = kdseg::make_net(arch, config);
  t.net->to(torch::Device(device));
  t.net->train();
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : t.net->named_parameters()) named.emplace_back(p.key(), p.value());
  t.opt = std::make_unique<kdseg::Optimizer>(named, kdseg::OptimizerOptions{});
  return t;
}

double train_step(Trainer& t, const at::Tensor& x, const at::Tensor& y, const std::string& device) {
  bench::sync(device);
  const double t0 = bench::now_s();
  t.opt->zero_grad();
  kdseg::SegOutput out;
  const kdseg::NarrowConvOff aten(t.aten);
  {
    kdseg::AutocastGuard autocast(t.bf16, device);
    out = t.net->forward(x);
  }
  out.logits = out.logits.to(at::kFloat);
  kdseg::LossTerms loss = kdseg::segmentation_loss(out, y, x);
  loss.total.backward();
  t.opt->step(1e-4);
  const double value = loss.total.item<double>();
  bench::sync(device);
  const double dt = bench::now_s() - t0;
  t.loss.push_back(value);
  return dt;
}

// ---------------------------------------------------------------- the previous make_sample
// kdseg's make_sample spatial path before issue 9 (grid_sample): the baseline of the sample
// timing.
kdseg::Sample old_make_sample(const kdseg::CachedCase& c, const kdseg::SampleSpec& spec,
                              const std::array<int64_t, 3>& patch,
                              const kdseg::AugmentOptions& opt) {
  const int64_t n_ch = c.image().size(0);
  const kdseg::AugmentParams a = kdseg::draw_augment(opt, spec.augment_key, n_ch);
  const auto m = kdseg::spatial_matrix(a, c.geometry().spacing);
  std::array<double, 3> centre{}, lo_f{1e300, 1e300, 1e300}, hi_f{-1e300, -1e300, -1e300};
  for (int i = 0; i < 3; ++i) centre[i] = spec.corner[i] + (patch[i] - 1) / 2.0;
  for (int corner = 0; corner < 8; ++corner) {
    double o[3];
    for (int j = 0; j < 3; ++j) o[j] = ((corner >> j) & 1 ? 1.0 : -1.0) * (patch[j] - 1) / 2.0;
    for (int i = 0; i < 3; ++i) {
      const double p = centre[i] + m[3 * i] * o[0] + m[3 * i + 1] * o[1] + m[3 * i + 2] * o[2];
      lo_f[i] = std::min(lo_f[i], p);
      hi_f[i] = std::max(hi_f[i], p);
    }
  }
  std::array<int64_t, 3> lo{}, size{};
  std::array<double, 3> local{};
  for (int i = 0; i < 3; ++i) {
    lo[i] = static_cast<int64_t>(std::floor(lo_f[i])) - 1;
    size[i] = static_cast<int64_t>(std::ceil(hi_f[i])) + 2 - lo[i];
    local[i] = centre[i] - lo[i];
  }
  std::vector<at::Tensor> parts{kdseg::extract_box(c.image(), lo, size).to(torch::kFloat32)};
  parts.push_back(
      kdseg::labels_to_regions(kdseg::extract_box(c.labels().unsqueeze(0), lo, size)[0]));
  at::Tensor out = kdseg::affine_resample_grid_sample(torch::cat(parts, 0), local, m, patch);
  kdseg::Sample s;
  s.image = out.slice(0, 0, n_ch);
  s.target = (out.slice(0, n_ch, n_ch + 3) >= 0.5f).to(torch::kFloat32);
  for (int64_t ch = 0; ch < n_ch; ++ch) {
    at::Tensor x = s.image[ch];
    x.copy_(torch::where(x != 0, x * a.contrast[ch] + a.shift[ch], x));
  }
  s.image = s.image.contiguous();
  s.target = s.target.contiguous();
  return s;
}

// A preprocessed case in the cache format: from --case, else a 160×192×150 phantom (noisy
// ellipsoidal brain, nested spherical tumour).
std::shared_ptr<const kdseg::CachedCase> cached_case(const std::string& case_dir,
                                                     const std::string& path, bool smoke) {
  kdseg::PreparedCase p;
  if (!case_dir.empty()) {
    kdseg::Dataset ds = kdseg::discover_dataset(case_dir);
    const kdseg::CaseData data = kdseg::load_case(ds.cases[0], ds.layout, 2);
    p = kdseg::preprocess_case(data, kdseg::paper_plan("student"));
  } else {
    const std::array<int64_t, 3> d =
        smoke ? std::array<int64_t, 3>{40, 44, 36} : std::array<int64_t, 3>{160, 192, 150};
    auto axis = [&](int a) {
      std::vector<int64_t> shape{1, 1, 1};
      shape[a] = d[a];
      return torch::arange(d[a], torch::kFloat32).view(shape);
    };
    auto sq = [](const at::Tensor& t) { return t * t; };
    at::Tensor brain =
        (sq((axis(0) - d[0] / 2.0) / (0.48 * d[0])) + sq((axis(1) - d[1] / 2.0) / (0.48 * d[1])) +
         sq((axis(2) - d[2] / 2.0) / (0.48 * d[2]))) <= 1;
    at::Tensor r =
        (sq(axis(0) - 0.45 * d[0]) + sq(axis(1) - 0.55 * d[1]) + sq(axis(2) - 0.5 * d[2])).sqrt();
    const double radius = 0.15 * d[0];
    at::Tensor labels = torch::zeros({d[0], d[1], d[2]}, torch::kUInt8);
    labels.masked_fill_(r <= radius, 2);
    labels.masked_fill_(r <= radius * 2 / 3, 4);
    labels.masked_fill_(r <= radius / 2, 1);
    torch::manual_seed(5);
    p.id = "PHANTOM";
    p.image = (torch::randn({4, d[0], d[1], d[2]}) + labels.to(torch::kFloat32).unsqueeze(0)) *
              brain.to(torch::kFloat32);
    p.labels = labels;
    p.geometry.box.full = d;
    p.geometry.box.hi = d;
    p.geometry.shape = d;
  }
  auto bytes =
      kdseg::encode_cached_case(p, "bench", nlohmann::json::object(), nlohmann::json::array());
  kdseg::write_file_atomic(path, bytes.data(), bytes.size());
  return kdseg::CachedCase::open(path);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const bench::Args args(argc, argv,
                           {"--bf16", "--smoke", "--no-aug", "--no-subprocess", "--aten-baseline"},
                           {"--device", "--patch", "--batch", "--steps", "--warmup", "--threads",
                            "--model", "--case", "--aug-samples", "--json", "--precision"});
    const std::string device = args.get("--device", "cpu");
    const bool smoke = args.has("--smoke"), cuda = bench::is_cuda(device);
    const int threads =
        static_cast<int>(args.num("--threads", std::max(1u, std::thread::hardware_concurrency())));
    const auto patch = parse_patch(args.get("--patch", smoke  ? "32"
                                                       : cuda ? "128"
                                                              : "144,144,128"));
    const int64_t batch = args.num("--batch", cuda ? 2 : 1);
    const int steps = static_cast<int>(args.num("--steps", smoke ? 1 : cuda ? 10 : 3));
    const int warmup = static_cast<int>(args.num("--warmup", smoke ? 0 : cuda ? 3 : 1));
    const std::string arch = args.get("--model", "student");
    nlohmann::json config = kdseg::paper_config(arch);
    if (smoke) config = {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}};
    std::string precision = args.get("--precision");
    if (precision.empty()) precision = args.has("--bf16") ? "bf16" : cuda ? "fp32" : "both";
    if (precision != "fp32" && precision != "bf16" && precision != "both" &&
        precision != "fp32-aten")
      throw std::runtime_error("--precision must be fp32, bf16, both or fp32-aten");
    const bool aten_baseline = args.has("--aten-baseline") && precision != "bf16";
    const bool table = precision == "both" || aten_baseline;
    kdseg::keep_freed_memory();
    at::set_num_threads(threads);

    json out;
    out["device"] = device;
    out["threads"] = threads;
    out["libtorch"] = TORCH_VERSION;
    out["allocator"] = kdseg::process_allocator();
    out["model"] = arch;
    out["patch"] = patch;
    out["batch"] = batch;

    // ---- training steps
    std::vector<Trainer> trainers;
    if (aten_baseline || precision == "fp32-aten")
      trainers.push_back(make_trainer("fp32-aten", false, arch, config, device));
    if (precision == "fp32" || precision == "both")
      trainers.push_back(make_trainer("fp32", false, arch, config, device));
    if (precision == "bf16" || precision == "both")
      trainers.push_back(make_trainer("bf16", true, arch, config, device));
    const int64_t n_params = kdseg::count_parameters(*trainers[0].net);
    torch::manual_seed(1);
    const at::Tensor x =
        torch::randn({batch, 4, patch[0], patch[1], patch[2]}).to(torch::Device(device));
    const at::Tensor y = sphere_targets(batch, patch).to(torch::Device(device));
    std::printf(
        "bench_train_step: %s (%lld parameters), patch %s, batch %lld, %s, %d thread(s), "
        "LibTorch %s; %s; %d warm-up + %d timed steps\n",
        arch.c_str(), static_cast<long long>(n_params), bench::shape_str(patch).c_str(),
        static_cast<long long>(batch), device.c_str(), threads, TORCH_VERSION,
        kdseg::process_allocator().c_str(), warmup, steps);
    for (int s = 0; s < warmup; ++s)
      for (auto& t : trainers) train_step(t, x, y, device);
    bench::cuda_reset_peak(device);
    for (int s = 0; s < steps; ++s)
      for (auto& t : trainers) {
        t.step_s.push_back(train_step(t, x, y, device));
        std::printf("  step %d %-5s %.3f s  loss %.4f\n", s + 1, t.name.c_str(), t.step_s.back(),
                    t.loss.back());
        std::fflush(stdout);
      }
    for (auto& t : trainers) t.cuda_gb = bench::cuda_max_allocated_gb(device);
    if (!table) trainers[0].peak_rss_gb = bench::peak_rss_gb();
    if (table && !args.has("--no-subprocess")) {
      for (auto& t : trainers) {
        const std::string js =
            (fs::temp_directory_path() /
             ("bench_train_step_" + std::to_string(getpid()) + "_" + t.name + ".json"))
                .string();
        std::string cmd = "'" + fs::read_symlink("/proc/self/exe").string() + "' --precision " +
                          t.name + " --no-aug --patch " + std::to_string(patch[0]) + "," +
                          std::to_string(patch[1]) + "," + std::to_string(patch[2]) + " --batch " +
                          std::to_string(batch) + " --steps 1 --warmup 0 --threads " +
                          std::to_string(threads) + " --model " + arch + " --json '" + js + "'" +
                          (smoke ? " --smoke" : "") + " > /dev/null";
        if (std::system(cmd.c_str()) == 0) {
          std::ifstream f(js);
          t.peak_rss_gb = json::parse(f).value("peak_rss_gb", -1.0);
          fs::remove(js);
        }
      }
    }
    const double base = bench::best(trainers[0].step_s);
    std::printf("\n%-9s %9s %9s %8s %8s %9s\n", "train", "s/step", "median", "speedup", "RSS GB",
                cuda ? "CUDA GB" : "");
    for (auto& t : trainers) {
      std::printf("%-9s %9.3f %9.3f %7.2fx %8.2f", t.name.c_str(), bench::best(t.step_s),
                  bench::median(t.step_s), base / bench::best(t.step_s), t.peak_rss_gb);
      if (t.cuda_gb >= 0) std::printf(" %9.2f", t.cuda_gb);
      std::printf("\n");
      json j;
      j["step_s"] = t.step_s;
      j["step_s_median"] = bench::median(t.step_s);
      j["step_s_best"] = bench::best(t.step_s);
      j["losses"] = t.loss;
      j["peak_rss_gb"] = t.peak_rss_gb;
      if (t.cuda_gb >= 0) j["cuda_max_allocated_gb"] = t.cuda_gb;
      j["bf16"] = t.bf16;
      out["train_" + t.name] = j;
    }
    // The reference's keys at the top level: the one precision asked for, else fp32.
    for (const char* k : {"step_s_median", "step_s_best", "peak_rss_gb", "cuda_max_allocated_gb"})
      if (out["train_" + trainers[0].name].contains(k))
        out[k] = out["train_" + trainers[0].name][k];
    if (table)
      std::printf("(best of %d interleaved steps; speedup = %s / the row)\n", steps,
                  trainers[0].name.c_str());
    trainers.clear();

    // ---- one augmented sample, one thread
    if (!cuda && !args.has("--no-aug")) {
      const std::array<int64_t, 3> sp =
          smoke ? std::array<int64_t, 3>{24, 24, 20} : std::array<int64_t, 3>{144, 144, 128};
      const std::string kdc =
          (fs::temp_directory_path() / ("bench_train_step_" + std::to_string(getpid()) + ".kdc"))
              .string();
      auto c = cached_case(args.get("--case"), kdc, smoke);
      const auto dims = c->geometry().shape;
      kdseg::SampleSpec spec;
      for (int i = 0; i < 3; ++i) spec.corner[i] = (dims[i] - sp[i]) / 2;
      kdseg::AugmentOptions aug;
      aug.p_scale = aug.p_rotate = aug.p_mirror = aug.p_shift = aug.p_contrast = 1.0;
      kdseg::AugmentOptions paper;  // kdseg's defaults: p 0.2 scale, 0.2 rotate, 0.5 mirrors
      at::set_num_threads(1);
      const int n = static_cast<int>(args.num("--aug-samples", smoke ? 2 : 4));
      std::vector<double> t_new, t_old, t_paper;
      double max_diff = 0;
      int64_t target_diff = 0, target_voxels = 0;
      for (int i = 0; i <= n; ++i) {  // i = 0: warm-up (page faults of the mapped cache)
        spec.augment_key = 1000 + static_cast<uint64_t>(i);
        double t0 = bench::now_s();
        kdseg::Sample a = kdseg::make_sample(*c, spec, sp, aug);
        const double dn = bench::now_s() - t0;
        t0 = bench::now_s();
        kdseg::Sample b = old_make_sample(*c, spec, sp, aug);
        const double dol = bench::now_s() - t0;
        t0 = bench::now_s();
        kdseg::make_sample(*c, spec, sp, paper);
        const double dp = bench::now_s() - t0;
        if (i == 0) continue;
        t_new.push_back(dn);
        t_old.push_back(dol);
        t_paper.push_back(dp);
        max_diff = std::max(max_diff, (a.image - b.image).abs().max().item<double>());
        target_diff += (a.target != b.target).sum().item<int64_t>();
        target_voxels += a.target.numel();
      }
      fs::remove(kdc);
      at::set_num_threads(threads);
      std::printf("\naugmented sample %s from a %s case, 1 thread, %d samples (best / median):\n",
                  bench::shape_str(sp).c_str(), bench::shape_str(dims).c_str(), n);
      std::printf("  grid_sample path (before)       %.3f / %.3f s   1.00x\n", bench::best(t_old),
                  bench::median(t_old));
      std::printf("  kdseg make_sample (all forced)  %.3f / %.3f s   %.2fx\n", bench::best(t_new),
                  bench::median(t_new), bench::best(t_old) / bench::best(t_new));
      std::printf("  kdseg make_sample (paper p's)   %.3f / %.3f s\n", bench::best(t_paper),
                  bench::median(t_paper));
      std::printf("  new vs before: image max |diff| %.2e, target voxels differing %lld of %lld\n",
                  max_diff, static_cast<long long>(target_diff),
                  static_cast<long long>(target_voxels));
      out["aug"] = {{"patch", sp},
                    {"sample_s", t_new},
                    {"sample_s_median", bench::median(t_new)},
                    {"sample_s_best", bench::best(t_new)},
                    {"grid_sample_s_median", bench::median(t_old)},
                    {"grid_sample_s_best", bench::best(t_old)},
                    {"paper_defaults_s_median", bench::median(t_paper)},
                    {"image_max_abs_diff_vs_grid_sample", max_diff},
                    {"target_voxels_differing", target_diff}};
    }
    if (args.has("--json")) bench::write_json_atomic(args.get("--json"), out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
