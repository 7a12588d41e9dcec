// Per-case inference of the paper-size student (issue 9, goal 1) through kdseg's own path:
// load_case → Ensemble::predict_case (preprocess → sliding window / whole crop + mirror TTA →
// undo crop) → probabilities_to_labels (threshold 0.5, regions → labels, tumour components under
// 10 % removed, as the reference). Variants of InferenceOptions and thread settings are timed in
// ONE process, interleaved round by round, against the baseline "plain" (fp32, one window
// covering the whole crop, the 4 X/Y flips one forward pass each — what the Python reference
// does), and their label maps are compared with the baseline's (Dice per region, voxels changed).
//
//   bench_infer --case DIR [--model CKPT] [--flips 4] [--reps 3] [--threads N] [--json FILE]
//               [--variants plain,bf16,...] [--no-subprocess] [--smoke]
//   bench_infer --device cuda [--bf16] --case DIR --flips 4 --reps 3 --json FILE   (bench/gpu.sh)
//   bench_infer --variant NAME ...   one variant only (what the peak-memory subprocesses run)
//
// With --device cuda, --bf16 or --variant, one configuration is measured (no table): on CUDA
// "fast" (whole crop, fused flips), else "plain" (fp32) or "bf16" (bf16 autocast), unless
// --variant names another. Its JSON carries the reference's keys: case_s_median, case_s_best,
// forward_s_median, forward_s_best (seconds per flip's forward pass), peak_rss_gb,
// cuda_max_allocated_gb.
//
// --stages: the first variant's case time split into preprocessing, predict_image (and the
// forward passes in it), putting the probabilities back on the case's grid, and labelling.
// Peak memory: ru_maxrss is a process-wide maximum, so the table's column comes from a
// subprocess per variant (this program with --variant NAME --reps 1); --no-subprocess skips it.
// Variants that change process-wide settings run only that way: "bf16-sysmalloc" (the process
// allocator's defaults, jemalloc's or glibc's, instead of kdseg::keep_freed_memory) and
// "bf16-avx512" (ATen's vectorised kernels at AVX-512, ATEN_CPU_CAPABILITY=avx512; Debian's build
// defaults to AVX2).
//
// FLOPs: the student's convolutions counted analytically from its layer shapes (2 FLOP per
// multiply-add; 3³ and 2³ kernels, 1×1 up/merge convs at their own resolution), for the padded
// crop the network sees; compared with the machine's measured peak (bench_common.h).
// Random weights (seed 1) unless --model: timing is the same; a trained model's logits sit
// further from the threshold, so its label agreement is higher than a random network's.
#include <ATen/record_function.h>
#include <malloc.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench_common.h"
#include "kdseg/data/preprocess.h"
#include "kdseg/eval/metrics.h"
#include "kdseg/infer/ensemble.h"
#include "kdseg/infer/postprocess.h"
#include "kdseg/infer/predict.h"
#include "kdseg/infer/sliding_window.h"
#include "kdseg/io/dataset.h"
#include "kdseg/models/blocks.h"
#include "kdseg/models/checkpoint.h"
#include "kdseg/models/registry.h"
#include "kdseg/models/student.h"
#include "kdseg/util/memory.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A network that times its inner network's forward passes (synchronising CUDA around them).
class TimedNetImpl : public kdseg::SegNetImpl {
 public:
  TimedNetImpl(kdseg::SegNet inner, std::string device)
      : inner_(register_module("inner", std::move(inner))), device_(std::move(device)) {}
  kdseg::SegOutput forward(const at::Tensor& x) override {
    bench::sync(device_);
    const double t0 = bench::now_s();
    kdseg::SegOutput out = inner_->forward(x);
    bench::sync(device_);
    seconds += bench::now_s() - t0;
    images += x.size(0);
    return out;
  }
  std::string arch() const override { return inner_->arch(); }
  int64_t stride() const override { return inner_->stride(); }
  nlohmann::json options_json() const override { return inner_->options_json(); }

  double seconds = 0;  // forward time since the last reset
  int64_t images = 0;  // images (batch entries) since the last reset

 private:
  kdseg::SegNet inner_;
  std::string device_;
};
TORCH_MODULE(TimedNet);

struct Variant {
  std::string name, what;
  kdseg::InferenceOptions opt;
  int threads = 0;               // 0 = the run's --threads
  bool subprocess_only = false;  // process-wide settings: only through --variant
  std::vector<std::string> env;  // NAME=VALUE for its subprocess
  bool system_malloc = false;    // no keep_freed_memory
};

std::vector<Variant> all_variants(const std::string& device, int flips, int threads) {
  kdseg::InferenceOptions base;
  base.device = device;
  base.window = "whole";
  base.tta = flips == 1 ? "none" : flips == 8 ? "all" : "xy";
  base.fuse_tta = false;
  base.bf16 = false;
  base.engine = "torch";  // LibTorch unless a variant says otherwise
  std::vector<Variant> v;
  auto add = [&](std::string name, std::string what, auto edit) {
    Variant x;
    x.name = std::move(name);
    x.what = std::move(what);
    x.opt = base;
    edit(x);
    v.push_back(std::move(x));
  };
  add("plain", "fp32, whole crop, flips one pass each (the reference's way)", [](Variant&) {});
  add("fp32-onednn", "fp32 through oneDNN directly (infer/onednn_student.h), flips one pass each",
      [](Variant& x) { x.opt.engine = "onednn"; });
  add("fused", "fp32, whole crop, flips fused in one batch (~4x the memory: run alone)",
      [](Variant& x) {
        x.opt.fuse_tta = true;
        x.subprocess_only = true;
      });
  add("bf16", "bf16 autocast, whole crop, flips one pass each",
      [](Variant& x) { x.opt.bf16 = true; });
  add("bf16-onednn", "bf16 through oneDNN directly (infer/onednn_student.h), flips one pass each",
      [](Variant& x) {
        x.opt.bf16 = true;
        x.opt.engine = "onednn";
      });
  add("bf16-fused", "bf16 autocast + fused flips", [](Variant& x) {
    x.opt.bf16 = true;
    x.opt.fuse_tta = true;
  });
  add("plan-window", "fp32, the plan's 144x144x128 windows, overlap 0.5 (the old default)",
      [](Variant& x) { x.opt.window = "plan"; });
  add("bf16-plan", "bf16, the plan's windows, overlap 0.5", [](Variant& x) {
    x.opt.window = "plan";
    x.opt.bf16 = true;
  });
  add("bf16-1thread", "bf16 on 1 thread (of " + std::to_string(threads) + ")", [](Variant& x) {
    x.opt.bf16 = true;
    x.threads = 1;
  });
  add("bf16-sysmalloc", "bf16 with the allocator's own defaults (no keep_freed_memory)",
      [](Variant& x) {
        x.opt.bf16 = true;
        x.subprocess_only = true;
        x.system_malloc = true;
      });
  add("bf16-avx512", "bf16, ATen kernels at AVX-512 (ATEN_CPU_CAPABILITY=avx512)", [](Variant& x) {
    x.opt.bf16 = true;
    x.subprocess_only = true;
    x.env = {"ATEN_CPU_CAPABILITY=avx512"};
  });
  add("fast", "bf16 if asked (--bf16), whole crop, fused flips (the GPU configuration)",
      [](Variant& x) { x.opt.fuse_tta = true; });
  return v;
}

// Conv FLOPs of one student forward pass on a (1,C,d,h,w) input (sides multiples of its stride).
double student_flops(const kdseg::StudentOptions& o, const std::array<int64_t, 3>& shape) {
  const auto& w = o.widths;
  const double n0 = static_cast<double>(shape[0]) * shape[1] * shape[2];
  auto n = [&](size_t l) { return n0 / std::pow(8.0, static_cast<double>(l)); };
  auto conv = [](double k3, double cin, double cout, double voxels) {
    return 2.0 * k3 * cin * cout * voxels;
  };
  double f = conv(27, o.in_channels, w[0], n(0)) + conv(27, w[0], o.out_channels, n(0));
  for (size_t l = 0; l < w.size(); ++l) {
    if (l > 0) f += conv(8, w[l - 1], w[l], n(l));
    f += o.encoder_blocks[l] * 2 * conv(27, w[l], w[l], n(l));
  }
  for (size_t l = 0; l + 1 < w.size(); ++l) {
    f += conv(1, w[l + 1], w[l], n(l + 1));  // 1×1 at the coarse level, then ×2
    f += conv(1, 2 * w[l], w[l], n(l));      // merge
    f += o.decoder_blocks[l] * 2 * conv(27, w[l], w[l], n(l));
  }
  return f;
}

struct Result {
  std::vector<double> case_s, forward_s;  // per case; per flip's forward pass
  double cold_s = -1;                     // the first case of the variant (warm-up round)
  double peak_rss_gb = -1, cuda_gb = -1;
  at::Tensor probs;
  kdseg::LabelMap labels;
  std::map<std::string, double> agreement;  // vs the baseline
};

// Dice of one region (kdseg::Region) between two label maps on the same grid.
double dice_of(const kdseg::LabelMap& a, const kdseg::LabelMap& b, kdseg::Region region) {
  const auto n = static_cast<int64_t>(a.data.size());
  return kdseg::dice(kdseg::region_mask(a.data.data(), n, region).data(),
                     kdseg::region_mask(b.data.data(), n, region).data(), n);
}

std::map<std::string, double> compare(const Result& r, const Result& base) {
  std::map<std::string, double> m;
  m["dice_wt"] = dice_of(r.labels, base.labels, kdseg::Region::WT);
  m["dice_tc"] = dice_of(r.labels, base.labels, kdseg::Region::TC);
  m["dice_et"] = dice_of(r.labels, base.labels, kdseg::Region::ET);
  int64_t changed = 0;
  for (size_t i = 0; i < r.labels.data.size(); ++i)
    changed += r.labels.data[i] != base.labels.data[i];
  m["voxels_changed_pct"] =
      100.0 * static_cast<double>(changed) / static_cast<double>(r.labels.data.size());
  m["prob_max_abs_diff"] = (r.probs - base.probs).abs().max().item<double>();
  return m;
}

// --profile: wall time per top-level ATen operation (RecordFunction callbacks on this thread;
// nested operations are inside their caller's time).
struct OpProfile {
  static thread_local int depth;
  static thread_local std::vector<double> starts;
  static std::map<std::string, std::pair<double, int64_t>>& totals() {
    static std::map<std::string, std::pair<double, int64_t>> t;
    return t;
  }
  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    starts.push_back(bench::now_s());
    ++depth;
    return nullptr;
  }
  static void leave(const at::RecordFunction& fn, at::ObserverContext*) {
    --depth;
    const double dt = bench::now_s() - starts.back();
    starts.pop_back();
    if (depth == 0) {
      std::string key = fn.name();
      static const bool detail = std::getenv("BENCH_PROFILE_DETAIL") != nullptr;
      if (detail && key != "aten::conv3d") {
        const auto inputs = fn.inputs();
        if (!inputs.empty() && inputs[0].isTensor()) {
          const auto& t = inputs[0].toTensor();
          key += std::string(" ") + c10::toString(t.scalar_type()) + " " +
                 (t.dim() >= 2 ? std::to_string(t.size(1)) : std::string("-")) + "ch" +
                 (t.is_contiguous() ? "" : " noncontig") + " n" + std::to_string(t.numel() >> 20) +
                 "M";
        }
      }
      if (key == "aten::conv3d") {  // by shape: input channels, output channels, kernel, side
        const auto inputs = fn.inputs();
        if (inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor()) {
          const auto x = inputs[0].toTensor().sizes(), w = inputs[1].toTensor().sizes();
          key += " " + std::to_string(w[1]) + "->" + std::to_string(w[0]) + " k" +
                 std::to_string(w[2]) + " at " + std::to_string(x[2]) + "x" + std::to_string(x[3]) +
                 "x" + std::to_string(x[4]) + " b" + std::to_string(x[0]);
        }
      }
      auto& e = totals()[key];
      e.first += dt;
      e.second += 1;
    }
  }
};
thread_local int OpProfile::depth = 0;
thread_local std::vector<double> OpProfile::starts;

// Seconds of the network's full-resolution operations on one (1,16,d,h,w) tensor, fp32 and
// bf16: where a forward pass goes beyond the convolutions' FLOPs (--ops).
void time_ops(const std::array<int64_t, 3>& s, int reps) {
  c10::InferenceMode guard;
  const std::vector<int64_t> full{1, 16, s[0], s[1], s[2]},
      half{1, 16, s[0] / 2, s[1] / 2, s[2] / 2};
  kdseg::Norm norm(kdseg::NormOptions{16, 8});
  torch::nn::Conv3d conv = kdseg::conv3d(16, 16, 3);
  std::printf("\nfull-resolution operations on (1,16,%s), best of %d (s):\n",
              bench::shape_str(s).c_str(), reps);
  std::printf("%-7s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "dtype", "conv3^3", "GFLOP/s", "GN",
              "lrelu", "lrelu_", "add", "cat", "up2x", "flip");
  for (const bool bf16 : {false, true}) {
    const auto dt = bf16 ? at::kBFloat16 : at::kFloat;
    at::Tensor x = at::randn(full).to(dt), xs = at::randn(half).to(dt);
    auto t = [&](auto f) { return bench::time_best(reps, "cpu", f); };
    double tc;
    {
      kdseg::AutocastGuard ac(bf16, "cpu");
      tc = t([&] { conv(x); });
    }
    const double tn = t([&] { norm(x); });
    const double tl = t([&] { at::leaky_relu(x, 0.01); });
    at::Tensor y = x.clone();
    const double tli = t([&] { at::leaky_relu_(y, 0.01); });
    const double ta = t([&] { at::add(x, x); });
    const double tcat = t([&] { at::cat({x, x}, 1); });
    const double tu = t([&] { kdseg::upsample2x(xs); });
    const double tf = t([&] { x.flip({2}); });
    // The decoder's 1×1 merge conv (32->16) at full resolution, as a convolution and as the
    // same product written as a matrix multiplication on the plain layout.
    at::Tensor x32 = at::cat({x, x}, 1), w1 = at::randn({16, 32, 1, 1, 1}).to(dt) * 0.1;
    double t1, tm;
    {
      kdseg::AutocastGuard ac(bf16, "cpu");
      t1 = t([&] { at::conv3d(x32, w1); });
      tm = t([&] { at::matmul(w1.view({16, 32}), x32.view({32, -1})); });
    }
    std::printf("  %s 1x1 conv 32->16: conv3d %.3f s, as matmul %.3f s\n", bf16 ? "bf16" : "fp32",
                t1, tm);
    std::printf("%-7s %8.3f %8.1f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n",
                bf16 ? "bf16" : "fp32", tc, 2.0 * 27 * 16 * 16 * s[0] * s[1] * s[2] / tc / 1e9, tn,
                tl, tli, ta, tcat, tu, tf);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const bench::Args args(
        argc, argv,
        {"--bf16", "--smoke", "--no-subprocess", "--list", "--ops", "--profile", "--stages"},
        {"--case", "--model", "--device", "--flips", "--reps", "--threads", "--json", "--variant",
         "--variants", "--warmup"});
    const std::string device = args.get("--device", "cpu");
    const bool smoke = args.has("--smoke");
    const int flips = static_cast<int>(args.num("--flips", 4));
    if (flips != 1 && flips != 4 && flips != 8)
      throw std::runtime_error("--flips must be 1, 4 or 8");
    const int threads =
        static_cast<int>(args.num("--threads", std::max(1u, std::thread::hardware_concurrency())));
    const int reps = static_cast<int>(args.num("--reps", smoke ? 1 : 3));
    std::vector<Variant> variants = all_variants(device, flips, threads);
    if (args.has("--list")) {
      for (const auto& v : variants) std::printf("%-15s %s\n", v.name.c_str(), v.what.c_str());
      return 0;
    }

    // Which variants: one (--variant, CUDA, --bf16), else the table.
    std::string single = args.get("--variant");
    if (single.empty() && (bench::is_cuda(device) || args.has("--bf16")))
      single = bench::is_cuda(device) ? "fast" : "bf16";
    std::vector<std::string> names;
    if (!single.empty()) {
      names = {single};
    } else if (args.has("--variants")) {
      std::string s = args.get("--variants");
      for (size_t p = 0; p <= s.size();) {
        const size_t q = std::min(s.find(',', p), s.size());
        if (q > p) names.push_back(s.substr(p, q - p));
        p = q + 1;
      }
      if (names.empty() || names[0] != "plain") names.insert(names.begin(), "plain");
    } else if (smoke) {
      names = {"plain", "bf16-fused"};
    } else {
      names = {"plain",      "fp32-onednn", "bf16",        "bf16-onednn",
               "bf16-fused", "bf16-plan",   "bf16-1thread"};
    }
    std::vector<Variant> chosen;
    for (const auto& n : names) {
      auto it = std::find_if(variants.begin(), variants.end(),
                             [&](const Variant& v) { return v.name == n; });
      if (it == variants.end()) throw std::runtime_error("unknown variant " + n + " (see --list)");
      chosen.push_back(*it);
      if (args.has("--bf16")) chosen.back().opt.bf16 = true;
    }
    const bool table = single.empty();
    if (!table && chosen[0].system_malloc) {
      // the allocator's defaults
    } else {
      kdseg::keep_freed_memory();
    }
    at::set_num_threads(threads);

    // ---- the case
    std::string case_dir = args.get("--case");
    if (case_dir.empty())
      throw std::runtime_error("--case DIR is required (kdseg synth makes one)");
    const double t_read0 = bench::now_s();
    kdseg::Dataset ds = kdseg::discover_dataset(case_dir);
    if (ds.cases.empty()) throw std::runtime_error("no case in " + case_dir);
    const kdseg::CaseData data = kdseg::load_case(ds.cases[0], ds.layout, 2);
    const double read_s = bench::now_s() - t_read0;

    // ---- the network
    torch::manual_seed(1);
    kdseg::SegNet inner{nullptr};
    kdseg::Checkpoint info;
    if (args.has("--model")) {
      inner = kdseg::load_checkpoint(args.get("--model"), &info);
      info.state = kdseg::StateDict();
    } else {
      info.arch = "student";
      info.model = kdseg::paper_config("student");
      if (smoke) info.model = {{"widths", {8, 8, 16, 16}}, {"norm_groups", 4}};
      inner = kdseg::make_net(info.arch, info.model);
      info.plan = kdseg::paper_plan("student");
      if (smoke) info.plan.spacing = {0, 0, 0};  // as stored: a coarse test case stays small
      info.plan.stride = inner->stride();
    }
    TimedNet timed(inner, device);
    kdseg::EnsembleMember member;
    member.path = args.has("--model") ? args.get("--model") : "random student";
    member.net = kdseg::SegNet(std::shared_ptr<kdseg::SegNetImpl>(timed.ptr()));
    member.info = info;
    kdseg::EnsembleMember untimed = member;  // for the oneDNN variant (see below)
    untimed.net = inner;
    const kdseg::PreprocessPlan plan = info.plan;
    // (the crop's size only: the prepared image is not kept, as Ensemble::predict_case does not)
    const std::array<int64_t, 3> crop = kdseg::preprocess_case(data, plan).geometry.shape;
    const auto whole = kdseg::whole_window(crop, inner->stride());
    double flops_pass = 0;
    if (info.arch == "student") {
      kdseg::StudentOptions so = info.model;
      flops_pass = student_flops(so, whole);
    }
    const int64_t n_params = kdseg::count_parameters(*inner);
    kdseg::PostprocessOptions post;
    post.min_component_fraction = 0.1;  // as the reference

    const double base_rss = bench::rss_gb();
    std::printf("bench_infer: case %s %s, %s; crop %s -> network input %s (multiples of %lld)\n",
                ds.cases[0].id.c_str(), bench::shape_str(data.image.dim).c_str(), device.c_str(),
                bench::shape_str(crop).c_str(), bench::shape_str(whole).c_str(),
                static_cast<long long>(inner->stride()));
    std::printf(
        "  model %s (%s, %lld parameters); %d flips; %d thread(s); LibTorch %s; %s; read %.2f s; "
        "RSS before inference %.2f GB\n",
        info.arch.c_str(), member.path.c_str(), static_cast<long long>(n_params), flips, threads,
        TORCH_VERSION, kdseg::process_allocator().c_str(), read_s, base_rss);
    if (flops_pass > 0)
      std::printf("  conv FLOPs: %.1f GFLOP per forward pass, %.1f GFLOP per case (x%d flips)\n",
                  flops_pass / 1e9, flops_pass * flips / 1e9, flips);

    if (args.has("--ops")) {  // the operations only
      time_ops(whole, reps);
      return 0;
    }

    if (args.has("--stages")) {  // the first variant's case time, stage by stage
      const Variant& v = chosen[0];
      kdseg::Ensemble e({v.opt.engine == "onednn" ? untimed : member}, v.opt);  // eval mode
      at::set_num_threads(v.threads > 0 ? v.threads : threads);
      std::map<std::string, std::vector<double>> t;
      for (int rep = -1; rep < reps; ++rep) {  // rep -1: warm-up
        auto lap = [&](const char* name, double t0) {
          bench::sync(device);
          if (rep >= 0) t[name].push_back(bench::now_s() - t0);
          return bench::now_s();
        };
        timed->seconds = 0;
        double t0 = bench::now_s();
        const kdseg::PreparedCase pc = kdseg::preprocess_case(data, info.plan);
        t0 = lap("1 preprocess (crop, z-score)", t0);
        at::Tensor p = kdseg::predict_image(*e.members()[0].net.ptr(), pc.image, info.plan, v.opt,
                                            e.members()[0].onednn.get());
        const double fwd = timed->seconds;
        t0 = lap("2 predict_image (all)", t0);
        if (rep >= 0) t["2a of which forward passes"].push_back(fwd);
        // As Ensemble::predict_case does for its one member: weight, normalise, clamp.
        p = kdseg::undo_geometry(p, pc.geometry).mul_(1.0).div_(1.0).clamp_(0, 1);
        t0 = lap("3 back on the case's grid", t0);
        // probabilities_to_labels, in its three steps
        const at::Tensor regions = kdseg::regions_to_labels(p, 0.5);
        t0 = lap("4a regions -> labels", t0);
        kdseg::LabelMap labels = kdseg::tensor_to_labels(regions, data.image);
        t0 = lap("4b labels onto the case's grid", t0);
        kdseg::postprocess_labels(labels.data.data(), labels.dim, labels.spacing, post);
        lap("4c small components removed", t0);
      }
      double total = 0;
      for (const auto& [k, v2] : t)
        if (k.find("2a") == std::string::npos) total += bench::median(v2);
      std::printf("\nstages of %s (median of %d): %.3f s per case\n", v.name.c_str(), reps, total);
      for (const auto& [k, v2] : t)
        std::printf("  %-32s %7.3f s %5.1f%%\n", k.c_str(), bench::median(v2),
                    100 * bench::median(v2) / total);
      return 0;
    }

    if (args.has("--profile")) {  // one case of the first variant, per operation
      kdseg::Ensemble e({member}, chosen.size() > 1 ? chosen[1].opt : chosen[0].opt);
      const int warm =
          std::getenv("BENCH_PROFILE_WARM") ? std::atoi(std::getenv("BENCH_PROFILE_WARM")) : 1;
      for (int w = 0; w < warm; ++w) e.predict_case(data);  // warm-up
      auto handle = at::addGlobalCallback(
          at::RecordFunctionCallback(&OpProfile::enter, &OpProfile::leave).needsInputs(true));
      const double t0 = bench::now_s();
      e.predict_case(data);
      const double total = bench::now_s() - t0;
      at::removeCallback(handle);
      std::vector<std::pair<double, std::string>> rows;
      for (const auto& [k, v] : OpProfile::totals()) rows.push_back({v.first, k});
      std::sort(rows.rbegin(), rows.rend());
      std::printf("\nprofile of %s: %.2f s per case\n",
                  chosen.size() > 1 ? chosen[1].name.c_str() : chosen[0].name.c_str(), total);
      for (size_t i = 0; i < rows.size() && i < 30; ++i)
        std::printf("  %-36s %7.3f s %5.1f%%  x%lld\n", rows[i].second.c_str(), rows[i].first,
                    100 * rows[i].first / total,
                    static_cast<long long>(OpProfile::totals()[rows[i].second].second));
      return 0;
    }

    // One Ensemble per variant, all sharing the timed network; the oneDNN variant gets the
    // network itself (it packs the student's weights, so it needs the student, not a wrapper),
    // and its forward passes are not timed on their own.
    std::vector<std::unique_ptr<kdseg::Ensemble>> ens;
    for (const auto& v : chosen)
      ens.push_back(std::make_unique<kdseg::Ensemble>(
          std::vector<kdseg::EnsembleMember>{v.opt.engine == "onednn" ? untimed : member}, v.opt));

    std::vector<Result> res(chosen.size());
    auto run_once = [&](size_t i, bool record) {
      const Variant& v = chosen[i];
      at::set_num_threads(v.threads > 0 ? v.threads : threads);
      timed->seconds = 0;
      timed->images = 0;
      bench::cuda_reset_peak(device);
      bench::sync(device);
      const double t0 = bench::now_s();
      at::Tensor probs = ens[i]->predict_case(data);
      kdseg::LabelMap labels = kdseg::probabilities_to_labels(probs, data.image, 0.5, post);
      const double dt = bench::now_s() - t0;
      at::set_num_threads(threads);
      if (res[i].cold_s < 0) res[i].cold_s = dt;
      if (!record) return;
      Result& r = res[i];
      r.case_s.push_back(dt);
      r.forward_s.push_back(timed->seconds / std::max<int64_t>(1, timed->images));
      r.cuda_gb = std::max(r.cuda_gb, bench::cuda_max_allocated_gb(device));
      if (r.labels.data.empty()) {   // the first recorded run: compared with the baseline's
        if (table) r.probs = probs;  // kept for the comparisons only (a one-variant run has none)
        r.labels = std::move(labels);
        if (i > 0 && table) {
          r.agreement = compare(r, res[0]);
          r.probs = at::Tensor();
        }
      }
    };

    const int warmup = static_cast<int>(args.num("--warmup", smoke ? 0 : 1));
    for (int w = 0; w < warmup; ++w)
      for (size_t i = 0; i < chosen.size(); ++i) run_once(i, false);
    for (int rep = 0; rep < reps; ++rep) {
      for (size_t i = 0; i < chosen.size(); ++i) {
        run_once(i, true);
        if (table)
          std::printf("  round %d %-13s %.2f s/case  (process RSS %.2f GB)\n", rep + 1,
                      chosen[i].name.c_str(), res[i].case_s.back(), bench::rss_gb());
        std::fflush(stdout);
      }
    }
    const double in_process_peak = bench::peak_rss_gb();
    if (!table) res[0].peak_rss_gb = in_process_peak;

    // ---- per-variant peak memory (and the process-wide variants) in subprocesses
    std::vector<Variant> extra;  // subprocess-only variants to add to the table
    if (table && !args.has("--no-subprocess")) {
      // This process keeps its freed heap (keep_freed_memory): hand it back before the children
      // run, or a child running a large variant next to it can exhaust the machine's memory.
      for (auto& r : res) r.probs = at::Tensor();
      ens.clear();
#if defined(__GLIBC__)
      malloc_trim(0);
#endif
      // The process-wide variants: all of them, or those --variants names.
      const std::string listed = "," + args.get("--variants") + ",";
      for (const auto& v : variants)
        if (v.subprocess_only && !smoke &&
            (!args.has("--variants") || listed.find("," + v.name + ",") != std::string::npos))
          extra.push_back(v);
      auto run_child = [&](const Variant& v) -> json {
        const std::string out =
            (fs::temp_directory_path() /
             ("bench_infer_" + std::to_string(getpid()) + "_" + v.name + ".json"))
                .string();
        std::string cmd;
        for (const auto& e : v.env) cmd += e + " ";
        cmd += "'" + fs::read_symlink("/proc/self/exe").string() + "' --variant " + v.name +
               " --case '" + case_dir + "' --flips " + std::to_string(flips) + " --threads " +
               std::to_string(threads) + " --reps " + (v.subprocess_only ? "2" : "1") +
               " --warmup 0 --json '" + out + "'";
        if (args.has("--model")) cmd += " --model '" + args.get("--model") + "'";
        if (smoke) cmd += " --smoke";
        cmd += " > /dev/null";
        const int rc = std::system(cmd.c_str());
        if (rc != 0) {
          std::printf("  %-13s failed in its subprocess (status %d%s)\n", v.name.c_str(), rc,
                      WIFSIGNALED(rc) || (WIFEXITED(rc) && WEXITSTATUS(rc) == 137)
                          ? ": killed, out of memory?"
                          : "");
          return json();
        }
        std::ifstream f(out);
        json j = json::parse(f);
        fs::remove(out);
        return j;
      };
      for (size_t i = 0; i < chosen.size(); ++i) {
        json j = run_child(chosen[i]);
        if (j.contains("peak_rss_gb")) res[i].peak_rss_gb = j["peak_rss_gb"].get<double>();
      }
      for (const auto& v : extra) {
        json j = run_child(v);
        if (!j.contains("case_s_best")) continue;
        chosen.push_back(v);
        Result r;
        r.case_s = j["case_s"].get<std::vector<double>>();
        r.forward_s = j["forward_s"].get<std::vector<double>>();
        r.peak_rss_gb = j["peak_rss_gb"].get<double>();
        r.cold_s = r.case_s.front();
        res.push_back(r);
      }
    }

    // ---- report
    const bench::Peak peak = table && !smoke ? bench::measure_peak(device) : bench::Peak{};
    json out;
    out["case"] = ds.cases[0].id;
    out["device"] = device;
    out["threads"] = threads;
    out["flips"] = flips;
    out["libtorch"] = TORCH_VERSION;
    out["allocator"] = kdseg::process_allocator();
    out["crop"] = crop;
    out["network_input"] = whole;
    out["parameters"] = n_params;
    out["gflop_per_pass"] = flops_pass / 1e9;
    out["gflop_per_case"] = flops_pass * flips / 1e9;
    out["read_s"] = read_s;
    out["rss_before_inference_gb"] = base_rss;
    auto figures = [&](size_t i) {
      const Result& r = res[i];
      json j;
      j["what"] = chosen[i].what;
      j["case_s"] = r.case_s;
      j["forward_s"] = r.forward_s;
      j["case_s_median"] = bench::median(r.case_s);
      j["case_s_best"] = bench::best(r.case_s);
      j["forward_s_median"] = bench::median(r.forward_s);
      j["forward_s_best"] = bench::best(r.forward_s);
      j["peak_rss_gb"] = r.peak_rss_gb;
      j["cold_case_s"] = r.cold_s;
      if (r.cuda_gb >= 0) j["cuda_max_allocated_gb"] = r.cuda_gb;
      for (const auto& [k, v] : r.agreement) j[k] = v;
      j["bf16"] = chosen[i].opt.bf16;
      j["fuse_tta"] = chosen[i].opt.fuse_tta;
      j["window"] = chosen[i].opt.window;
      return j;
    };
    if (!table) {
      json j = figures(0);
      for (auto& [k, v] : j.items()) out[k] = v;
      out["variant"] = chosen[0].name;
      std::printf("%s: %.3f s/case median, %.3f best; %.3f s/forward pass median; peak RSS %.2f GB",
                  chosen[0].name.c_str(), bench::median(res[0].case_s), bench::best(res[0].case_s),
                  bench::median(res[0].forward_s), res[0].peak_rss_gb);
      if (res[0].cuda_gb >= 0) std::printf("; CUDA max allocated %.2f GB", res[0].cuda_gb);
      std::printf("\n");
    } else {
      const double base = bench::best(res[0].case_s);
      std::printf("\n%-14s %7s %7s %7s %7s %8s %8s %6s %7s %7s %7s %7s %8s\n", "variant", "s/case",
                  "median", "cold", "s/pass", "speedup", "GFLOP/s", "peak%", "RSS GB", "DiceWT",
                  "DiceTC", "DiceET", "changed%");
      for (size_t i = 0; i < chosen.size(); ++i) {
        const Result& r = res[i];
        const double b = bench::best(r.case_s);
        const double achieved = flops_pass * flips / b / 1e9;
        const double pk = chosen[i].opt.bf16 ? peak.bf16() : peak.fp32();
        std::printf("%-14s %7.2f %7.2f %7.2f %7.3f %7.2fx %8.1f %5.0f%% %7.2f",
                    chosen[i].name.c_str(), b, bench::median(r.case_s), r.cold_s,
                    bench::best(r.forward_s), base / b, achieved,
                    pk > 0 ? 100.0 * achieved / pk : 0.0, r.peak_rss_gb);
        if (!r.agreement.empty())
          std::printf(" %7.4f %7.4f %7.4f %8.4f", r.agreement.at("dice_wt"),
                      r.agreement.at("dice_tc"), r.agreement.at("dice_et"),
                      r.agreement.at("voxels_changed_pct"));
        std::printf("\n");
      }
      std::printf(
          "(s/case: best of %d interleaved rounds after a warm-up round, median; cold: the "
          "variant's first case in the process; s/pass: forward time per flip (0: not timed: the "
          "oneDNN variant); speedup = plain / "
          "variant; GFLOP/s: the whole crop's conv FLOPs / s/case (plan windows compute more); "
          "peak%%: of the practical peak below; RSS: peak resident set of the variant alone, in a "
          "subprocess; Dice/changed: labels vs plain's)\n",
          reps);
      if (peak.fp32() > 0)
        std::printf(
            "machine practical peak (%d threads): fp32 %.0f GFLOP/s (GEMM %.0f, conv128 "
            "%.0f), bf16 %.0f GFLOP/s (GEMM %.0f, conv128 %.0f)\n",
            threads, peak.fp32(), peak.gemm_fp32, peak.conv_fp32, peak.bf16(), peak.gemm_bf16,
            peak.conv_bf16);
      if (peak.bf16() > 0 && flops_pass > 0)
        std::printf("compute limit per case: fp32 %.2f s, bf16 %.2f s (FLOPs / practical peak)\n",
                    flops_pass * flips / 1e9 / peak.fp32(), flops_pass * flips / 1e9 / peak.bf16());
      out["baseline"] = "plain";
      json vs;
      for (size_t i = 0; i < chosen.size(); ++i) vs[chosen[i].name] = figures(i);
      out["variants"] = vs;
      out["peak_gflops"] = {{"gemm_fp32", peak.gemm_fp32},
                            {"gemm_bf16", peak.gemm_bf16},
                            {"conv_fp32", peak.conv_fp32},
                            {"conv_bf16", peak.conv_bf16}};
      // The reference's keys at the top: the fastest variant.
      size_t fastest = 0;
      for (size_t i = 1; i < chosen.size(); ++i)
        if (bench::best(res[i].case_s) < bench::best(res[fastest].case_s)) fastest = i;
      json f = figures(fastest);
      for (const char* k :
           {"case_s_median", "case_s_best", "forward_s_median", "forward_s_best", "peak_rss_gb"})
        out[k] = f[k];
      out["fastest"] = chosen[fastest].name;
    }
    if (args.has("--json")) bench::write_json_atomic(args.get("--json"), out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_infer: %s\n", e.what());
    return 1;
  }
  return 0;
}
