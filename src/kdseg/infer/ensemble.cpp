#include "kdseg/infer/ensemble.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "kdseg/data/cache.h"
#include "kdseg/data/preprocess.h"
#include "kdseg/infer/onednn_student.h"
#include "kdseg/infer/sliding_window.h"
#include "kdseg/io/gzip.h"
#include "kdseg/runtime/autocast.h"
#include "kdseg/util/error.h"

namespace kdseg {

std::array<int64_t, 3> resolve_window(const std::string& window, const PreprocessPlan& plan,
                                      const std::array<int64_t, 3>& shape, int64_t stride) {
  if (window == "whole") return whole_window(shape, stride);
  if (window == "auto") {
    const auto whole = whole_window(shape, stride);
    if (whole[0] * whole[1] * whole[2] <= kAutoWholeVoxels) return whole;
  }
  std::array<int64_t, 3> w = plan.patch;
  if (window != "plan" && window != "auto") {
    std::istringstream in(window);
    char x1 = 0, x2 = 0;
    if (!(in >> w[0] >> x1 >> w[1] >> x2 >> w[2]) || x1 != 'x' || x2 != 'x' || !in.eof())
      throw Error("--window", "\"" + window + "\" is not auto, plan, whole or DxHxW",
                  "e.g. --window 128x128x128");
  }
  for (int a = 0; a < 3; ++a)
    if (w[a] <= 0 || w[a] % stride != 0)
      throw Error("--window",
                  "window " + shape_text(w) +
                      " is not a multiple of the network's "
                      "stride " +
                      std::to_string(stride),
                  "use sides divisible by " + std::to_string(stride));
  return w;
}

namespace {

// Which engine is faster, measured with bench/engine_choice.sh (whole `kdseg predict` processes,
// the two engines alternated in one command; figures and CPUs in docs/engines.md), by precision,
// the oneDNN engine's channel block on this CPU (16: AVX-512; 8: float32 on AVX2 without AVX-512)
// and network. A row with arch "" holds for every network. Where no row matches, oneDNN.
struct EngineRule {
  bool bf16;
  int64_t block;
  const char* arch;
  bool onednn;
  const char* measured;  // what the choice rests on, as the reason says it
};
constexpr EngineRule kEngineTable[] = {
    {true, 16, "", true, "oneDNN measured 1.6x LibTorch's bf16 autocast on AVX-512 BF16"},
    {false, 16, "", true, "oneDNN measured 1.2-1.3x LibTorch on AVX-512"},
    // AMD EPYC (Zen 3 class), AVX2 + FMA, 2 threads, 2026-12-07: torch / oneDNN seconds, 1 mm
    // paper-size with 4 flips | 3 mm default-experiment widths without flips.
    {false, 8, "student", false,
     "LibTorch measured 1.08-1.12x faster than oneDNN for the student (27.6 / 29.9 s per 1 mm "
     "case)"},
    {false, 8, "unet", true, "oneDNN measured 1.06-1.08x LibTorch for the unet, half the memory"},
    {false, 8, "resunet", true,
     "oneDNN measured 0.96-1.17x LibTorch for resunet(-vae), 40 % less memory"},
    {false, 8, "resunet-vae", true,
     "oneDNN measured 0.96-1.17x LibTorch for resunet(-vae), 40 % less memory"},
};

}  // namespace

EngineChoice choose_engine(const SegNetImpl& net, const InferenceOptions& opt) {
  if (opt.engine != "auto" && opt.engine != "torch" && opt.engine != "onednn")
    throw Error("--engine", "unknown engine '" + opt.engine + "'", "use auto, torch or onednn");
  if (opt.engine == "torch") return {false, "asked for (--engine torch)"};
  const std::string why = torch::Device(opt.device).type() != torch::kCPU
                              ? "the oneDNN path runs on a CPU only (device " + opt.device + ")"
                              : onednn_unavailable(net, opt.bf16);
  if (!why.empty()) {
    if (opt.engine == "onednn") throw Error("--engine onednn", why, "use --engine auto");
    return {false, "auto: " + why};
  }
  if (opt.engine == "onednn") return {true, "asked for (--engine onednn)"};
  const int64_t block = onednn_block(opt.bf16);
  const char* isa = block == 16 ? "AVX-512" : "AVX2 (no AVX-512)";
  for (const EngineRule& r : kEngineTable)
    if (r.bf16 == opt.bf16 && r.block == block && (!*r.arch || net.arch() == r.arch))
      return {r.onednn, std::string("auto: on this ") + isa + " CPU " + r.measured};
  return {true, std::string("auto: no measurement for ") + net.arch() + " on " + isa + ": oneDNN"};
}

bool uses_onednn(const SegNetImpl& net, const InferenceOptions& opt) {
  return choose_engine(net, opt).onednn;
}

at::Tensor predict_image(SegNetImpl& net, const at::Tensor& image, const PreprocessPlan& plan,
                         const InferenceOptions& opt, const OneDnnNet* onednn) {
  c10::InferenceMode guard;
  const std::array<int64_t, 3> shape{image.size(1), image.size(2), image.size(3)};
  WindowOptions w;
  w.window = resolve_window(opt.window, plan, shape, net.stride());
  w.overlap = opt.overlap;
  w.batch = opt.window_batch;
  const torch::Device device(opt.device);
  Predictor predict;
  if (onednn) {  // the flips inside: no flipped copies of the input or the probabilities
    const auto flips = mirror_sets(opt.tta);
    if (w.window[0] >= shape[0] && w.window[1] >= shape[1] && w.window[2] >= shape[2])
      // One window over the whole image: the padding inside too (no padded copies).
      return onednn->predict_mirrored(image.unsqueeze(0), flips, w.window)[0];
    predict = [onednn, flips](const at::Tensor& batch) {
      return onednn->predict_mirrored(batch, flips);
    };
  } else {
    Predictor forward = [&net, &opt](const at::Tensor& batch) {
      AutocastGuard autocast(opt.bf16, opt.device);
      return torch::sigmoid(net.forward(batch).logits.to(at::kFloat));
    };
    predict = with_mirror_tta(forward, opt.tta, opt.fuse_tta);
  }
  at::Tensor probs = sliding_window(image.to(device), predict, w);
  return probs.to(at::kCPU);
}

Ensemble::Ensemble(const std::vector<std::string>& checkpoints, const std::vector<double>& weights,
                   InferenceOptions opt)
    : opt_(std::move(opt)) {
  if (checkpoints.empty())
    throw Error("--model", "no checkpoint given", "pass --model runs/NAME/checkpoints/best.pt");
  if (!weights.empty() && weights.size() != checkpoints.size())
    throw Error("--weights",
                std::to_string(weights.size()) + " weight(s) for " +
                    std::to_string(checkpoints.size()) + " model(s)",
                "give one weight per --model, or none");
  mirror_sets(opt_.tta);  // validates the mode before any loading
  for (size_t i = 0; i < checkpoints.size(); ++i) {
    EnsembleMember m;
    m.path = checkpoints[i];
    m.weight = weights.empty() ? 1.0 : weights[i];
    if (!(m.weight > 0)) throw Error("--weights", "weights must be positive");
    m.net = load_checkpoint(m.path, &m.info);
    m.info.state = StateDict();  // the weights live in the net
    const auto bytes = read_file(m.path);
    m.digest = hash_hex(std::string(bytes.begin(), bytes.end()));
    members_.push_back(std::move(m));
  }
  place_members();
}

Ensemble::Ensemble(std::vector<EnsembleMember> members, InferenceOptions opt)
    : members_(std::move(members)), opt_(std::move(opt)) {
  if (members_.empty()) throw Error("ensemble", "no member given");
  mirror_sets(opt_.tta);
  for (const auto& m : members_) {
    if (m.net.is_empty()) throw Error("ensemble", "member " + m.path + " has no network");
    if (!(m.weight > 0)) throw Error("--weights", "weights must be positive");
  }
  place_members();
}

void Ensemble::place_members() {
  for (auto& m : members_) {
    m.net->to(torch::Device(opt_.device));
    m.net->eval();
    validate_plan(m.info.plan, m.path);
    m.onednn.reset();
    const EngineChoice engine = choose_engine(*m.net, opt_);
    m.engine_why = engine.why;
    if (engine.onednn) m.onednn = make_onednn(*m.net, opt_.bf16);
  }
}

std::vector<std::string> Ensemble::engines() const {
  std::vector<std::string> out;
  const std::string device = torch::Device(opt_.device).is_cpu() ? "" : " on " + opt_.device;
  for (const auto& m : members_) {
    std::string how;
    if (m.onednn)
      how = std::string("oneDNN ") + (m.onednn->bf16() ? "bf16" : "fp32") + " (" +
            std::to_string(m.onednn->block()) + "-channel blocks)";
    else
      how = std::string("LibTorch ") + (opt_.bf16 ? "bf16 autocast" : "fp32") + device;
    out.push_back(m.info.arch + ": " + how + (m.engine_why.empty() ? "" : "; " + m.engine_why));
  }
  return out;
}

std::string Ensemble::tta() const {
  const size_t n = mirror_sets(opt_.tta).size();
  if (n == 1) return "no flips (--tta none)";
  const bool fused =
      opt_.fuse_tta && std::none_of(members_.begin(), members_.end(),
                                    [](const EnsembleMember& m) { return m.onednn; });
  return std::to_string(n) + " flips (" + opt_.tta + "), " +
         (fused ? "in one batch (--fuse-tta)" : "one per pass");
}

at::Tensor Ensemble::predict_case(const CaseData& data) const {
  std::map<std::string, PreparedCase> prepared;  // by plan, shared between members
  at::Tensor sum;
  double total = 0;
  for (const auto& m : members_) {
    const std::string key = nlohmann::json(m.info.plan).dump();
    auto it = prepared.find(key);
    if (it == prepared.end()) it = prepared.emplace(key, preprocess_case(data, m.info.plan)).first;
    const PreparedCase& pc = it->second;
    at::Tensor p = predict_image(*m.net.ptr(), pc.image, m.info.plan, opt_, m.onednn.get());
    p = undo_geometry(p, pc.geometry);
    sum = sum.defined() ? sum.add_(p, m.weight) : p.mul_(m.weight);
    total += m.weight;
  }
  return sum.div_(total).clamp_(0, 1);
}

}  // namespace kdseg
