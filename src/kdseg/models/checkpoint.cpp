#include "kdseg/models/checkpoint.h"

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <set>

#include "kdseg/io/gzip.h"
#include "kdseg/models/blocks.h"
#include "kdseg/util/error.h"

namespace kdseg {

StateDict state_dict(const torch::nn::Module& module) {
  StateDict state;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    state.insert(item.key(), item.value().detach().to(torch::kCPU).contiguous());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    state.insert(item.key(), item.value().detach().to(torch::kCPU).contiguous());
  return state;
}

void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& where) {
  auto params = module.named_parameters(/*recurse=*/true);
  auto buffers = module.named_buffers(/*recurse=*/true);
  std::set<std::string> expected;
  for (const auto& item : params) expected.insert(item.key());
  for (const auto& item : buffers) expected.insert(item.key());

  std::string missing, unexpected, mismatched;
  auto append = [](std::string& list, const std::string& s) {
    list += (list.empty() ? "" : ", ") + s;
  };
  for (const auto& name : expected)
    if (!state.contains(name)) append(missing, name);
  for (const auto& entry : state) {
    const std::string& name = entry.key();
    if (!expected.count(name)) {
      append(unexpected, name);
      continue;
    }
    const at::Tensor* target = params.find(name);
    if (!target) target = buffers.find(name);
    if (target->sizes() != entry.value().sizes())
      append(mismatched, name + " " + shape_string(entry.value().sizes().vec()) + " vs " +
                             shape_string(target->sizes().vec()));
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string what = "the weights do not fit the network";
    if (!missing.empty()) what += "; missing: " + missing;
    if (!unexpected.empty()) what += "; unexpected: " + unexpected;
    if (!mismatched.empty()) what += "; shape (file vs network): " + mismatched;
    throw Error(where, what,
                "the checkpoint's config must describe the network its weights came from");
  }
  torch::NoGradGuard no_grad;
  for (auto& item : params) item.value().copy_(state.at(item.key()));
  for (auto& item : buffers) item.value().copy_(state.at(item.key()));
}

void save_checkpoint(const std::string& path, const SegNetImpl& net, PreprocessPlan plan,
                     const c10::impl::GenericDict& extra) {
  plan.stride = net.stride();
  const nlohmann::json config = {{"model", net.options_json()}, {"plan", plan}};
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", std::string(kCheckpointFormat));
  dict.insert("version", kCheckpointVersion);
  dict.insert("arch", net.arch());
  dict.insert("config", config.dump(2));
  dict.insert("state_dict", state_dict(net));
  for (const auto& entry : extra) {
    if (!entry.key().isString()) throw Error(path, "extra checkpoint entries need string keys");
    const std::string key = entry.key().toStringRef();
    if (dict.contains(key))
      throw Error(path, "extra checkpoint entry \"" + key + "\" would replace a reserved entry");
    dict.insert(key, entry.value());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

Checkpoint read_checkpoint(const std::string& path) {
  const std::vector<uint8_t> raw = read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(raw.begin(), raw.end()));
  } catch (const std::exception& e) {
    throw Error(path, "not a kdseg checkpoint (cannot be unpickled)",
                "kdseg reads the .pt files that kdseg train writes (torch::pickle_save of a dict)");
  }
  const std::string hint = "kdseg reads the .pt files that kdseg train writes";
  if (!value.isGenericDict()) throw Error(path, "not a kdseg checkpoint (not a dict)", hint);
  c10::impl::GenericDict dict = value.toGenericDict();
  auto get = [&](const char* key) -> c10::IValue {
    if (!dict.contains(key))
      throw Error(path, std::string("not a kdseg checkpoint (no \"") + key + "\" entry)", hint);
    return dict.at(key);
  };
  c10::IValue format = get("format");
  if (!format.isString() || format.toStringRef() != kCheckpointFormat)
    throw Error(path,
                std::string("not a kdseg checkpoint (format is not \"") + kCheckpointFormat + "\")",
                hint);
  c10::IValue version = get("version");
  if (!version.isInt()) throw Error(path, "checkpoint version is not an integer", hint);
  Checkpoint ckpt;
  ckpt.version = version.toInt();
  if (ckpt.version != kCheckpointVersion)
    throw Error(path,
                "checkpoint format version " + std::to_string(ckpt.version) +
                    ", this kdseg reads version " + std::to_string(kCheckpointVersion),
                ckpt.version > kCheckpointVersion
                    ? "it was written by a newer kdseg: use that version, or retrain"
                    : "it was written by an older kdseg: retrain, or convert it with that version");
  c10::IValue arch = get("arch");
  c10::IValue config = get("config");
  c10::IValue state = get("state_dict");
  if (!arch.isString() || !config.isString() || !state.isGenericDict())
    throw Error(path, "malformed checkpoint (arch and config must be strings, state_dict a dict)",
                hint);
  ckpt.arch = arch.toStringRef();
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(config.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("malformed checkpoint config JSON: ") + e.what(), hint);
  }
  if (!cfg.is_object() || !cfg.contains("model"))
    throw Error(path, "malformed checkpoint config (no \"model\" entry)", hint);
  ckpt.model = cfg.at("model");
  if (cfg.contains("plan")) ckpt.plan = cfg.at("plan").get<PreprocessPlan>();
  for (const auto& entry : state.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor())
      throw Error(path, "malformed checkpoint state_dict (needs string → tensor)", hint);
    ckpt.state.insert(entry.key().toStringRef(), entry.value().toTensor());
  }
  static const std::set<std::string> reserved{"format", "version", "arch", "config", "state_dict"};
  for (const auto& entry : dict)
    if (entry.key().isString() && !reserved.count(entry.key().toStringRef()))
      ckpt.extra.insert(entry.key(), entry.value());
  return ckpt;
}

SegNet load_checkpoint(const std::string& path, Checkpoint* info) {
  Checkpoint ckpt = read_checkpoint(path);
  SegNet net = nullptr;
  try {
    net = make_net(ckpt.arch, ckpt.model);
  } catch (const Error& e) {
    throw Error(path, "cannot build the network it describes: " + e.where() + ": " + e.problem(),
                e.hint());
  }
  load_state_dict(*net, ckpt.state, path);
  net->eval();
  if (info) *info = std::move(ckpt);
  return net;
}

}  // namespace kdseg
