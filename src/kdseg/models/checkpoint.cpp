#include "kdseg/models/checkpoint.h"

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <map>
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

namespace {

const std::set<std::string> kReserved{"format", "version",    "arch",
                                      "config", "state_dict", "digest"};

at::ScalarType scalar_type(const std::string& dtype) {
  static const std::map<std::string, at::ScalarType> kTypes{
      {"float32", at::kFloat},     {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong},     {"int32", at::kInt},
      {"int16", at::kShort},       {"int8", at::kChar},      {"uint8", at::kByte},
      {"bool", at::kBool}};
  return kTypes.at(dtype);
}

c10::TypePtr type_of(const TypeTag& t) {
  const std::string& n = t.name;
  if (n == "Tensor") return c10::TensorType::get();
  if (n == "int") return c10::IntType::get();
  if (n == "float") return c10::FloatType::get();
  if (n == "bool") return c10::BoolType::get();
  if (n == "str") return c10::StringType::get();
  if (n == "NoneType") return c10::NoneType::get();
  if (n == "List") return c10::ListType::create(type_of(t.args[0]));
  if (n == "Dict") return c10::DictType::create(type_of(t.args[0]), type_of(t.args[1]));
  if (n == "Optional") return c10::OptionalType::create(type_of(t.args[0]));
  if (n == "Tuple") {
    std::vector<c10::TypePtr> items;
    for (const TypeTag& a : t.args) items.push_back(type_of(a));
    return c10::TupleType::create(items);
  }
  return c10::AnyType::get();
}

// The IValues of a parsed (already validated) pickle: containers typed by their tags, or by the
// enclosing container's type, else Any; tensors copied out of the file, one storage per record.
class ToIValue {
 public:
  explicit ToIValue(std::string where) : where_(std::move(where)) {}

  c10::IValue operator()(const PickleValue& v, const TypeTag* expected = nullptr) {
    using K = PickleValue::Kind;
    static const TypeTag kAny{"Any", {}};
    TypeTag own;
    if (!v.type_tag.empty()) {
      own = parse_type_tag(v.type_tag, where_);
      expected = &own;
    }
    switch (v.kind) {
      case K::none:
        return c10::IValue();
      case K::boolean:
        return v.boolean;
      case K::integer:
        return v.integer;
      case K::real:
        return v.real;
      case K::string:
        return v.string;
      case K::tensor:
        return tensor(*v.tensor);
      case K::list: {
        const TypeTag& item = expected && expected->name == "List" ? expected->args[0] : kAny;
        c10::impl::GenericList list(type_of(item));
        for (const PickleValue& x : v.items) list.push_back((*this)(x, &item));
        return list;
      }
      case K::tuple: {
        const bool typed = expected && expected->name == "Tuple";
        std::vector<c10::IValue> items;
        for (size_t i = 0; i < v.items.size(); ++i)
          items.push_back((*this)(v.items[i], typed ? &expected->args[i] : &kAny));
        return c10::ivalue::Tuple::create(std::move(items));
      }
      case K::dict: {
        const bool typed = expected && expected->name == "Dict";
        const TypeTag& key = typed ? expected->args[0] : kAny;
        const TypeTag& value = typed ? expected->args[1] : kAny;
        c10::impl::GenericDict dict(type_of(key), type_of(value));
        for (size_t i = 0; i < v.keys.size(); ++i)
          dict.insert((*this)(v.keys[i], &key), (*this)(v.items[i], &value));
        return dict;
      }
    }
    return c10::IValue();
  }

 private:
  at::Tensor tensor(const PickleTensor& t) {
    const at::ScalarType type = scalar_type(t.dtype);
    auto found = storages_.find(t.storage);
    if (found == storages_.end()) {
      at::Tensor flat = at::empty({t.storage_numel}, at::TensorOptions().dtype(type));
      if (t.storage_numel > 0)
        std::memcpy(flat.data_ptr(), t.data, static_cast<size_t>(t.storage_numel) * t.element_size);
      found = storages_.emplace(t.storage, flat.storage()).first;
    }
    at::Tensor out = at::empty({0}, at::TensorOptions().dtype(type));
    out.set_(found->second, t.offset, t.sizes, t.strides);
    if (t.requires_grad && out.is_floating_point()) out.requires_grad_(true);
    return out;
  }

  std::string where_;
  std::map<std::string, at::Storage> storages_;
};

std::shared_ptr<const std::vector<uint8_t>> pickle_bytes(const c10::impl::GenericDict& dict,
                                                         const std::string& where) {
  std::vector<char> bytes;
  try {
    bytes = torch::pickle_save(c10::IValue(dict));
  } catch (const c10::Error& e) {
    throw Error(where, std::string("cannot pickle the checkpoint: ") + e.what_without_backtrace());
  }
  return std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
}

}  // namespace

std::vector<uint8_t> checkpoint_file_bytes(c10::impl::GenericDict dict, const std::string& where) {
  if (dict.contains("digest"))
    throw Error(where, "the checkpoint dict already has a \"digest\" entry");
  const std::string hint =
      "a checkpoint's extra entries may be None, bools, ints, floats, "
      "strings, tensors, and lists, tuples and dicts of them";
  std::string digest;
  try {
    dict = dict.copy();  // GenericDict is a handle: leave the caller's dict as it was
    digest = content_digest(read_pickle_archive(pickle_bytes(dict, where), where).root);
    dict.insert("digest", digest);
    const auto bytes = pickle_bytes(dict, where);
    const PickleArchive back = read_pickle_archive(bytes, where);
    const PickleValue* stored = back.root.find("digest");
    if (!stored || stored->string != digest || content_digest(back.root) != digest)
      throw Error(where, "the written bytes do not give back their digest");
    return *bytes;
  } catch (const Error& e) {
    throw Error(where, "kdseg would not read back this checkpoint: " + e.problem(), hint);
  }
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
    if (kReserved.count(key))
      throw Error(path, "extra checkpoint entry \"" + key + "\" would replace a reserved entry");
    dict.insert(key, entry.value());
  }
  const std::vector<uint8_t> bytes = checkpoint_file_bytes(dict, path);
  write_file_atomic(path, bytes.data(), bytes.size());
}

Checkpoint read_checkpoint(const std::string& path) {
  const CheckpointFile file =
      parse_checkpoint(std::make_shared<const std::vector<uint8_t>>(read_file(path)), path);
  for (const std::string& w : file.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const std::string hint = "kdseg reads the .pt files that kdseg train writes";
  const PickleValue& dict = file.dict();
  Checkpoint ckpt;
  ckpt.version = file.version;
  ckpt.digest = file.digest;
  ckpt.arch = dict.find("arch")->string;
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(dict.find("config")->string);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("malformed checkpoint config JSON: ") + e.what(), hint);
  }
  if (!cfg.is_object() || !cfg.contains("model"))
    throw Error(path, "malformed checkpoint config (no \"model\" entry)", hint);
  ckpt.model = cfg.at("model");
  if (cfg.contains("plan")) ckpt.plan = cfg.at("plan").get<PreprocessPlan>();
  ToIValue to_ivalue(path);
  const PickleValue& state = *dict.find("state_dict");
  for (size_t i = 0; i < state.keys.size(); ++i)
    ckpt.state.insert(state.keys[i].string, to_ivalue(state.items[i]).toTensor());
  for (size_t i = 0; i < dict.keys.size(); ++i)
    if (!kReserved.count(dict.keys[i].string))
      ckpt.extra.insert(dict.keys[i].string, to_ivalue(dict.items[i]));
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
