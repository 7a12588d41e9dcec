#include "kdseg/data/cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "kdseg/util/parallel.h"

namespace kdseg {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kMagic[8] = {'K', 'D', 'S', 'E', 'G', 'P', 'C', '\0'};
constexpr const char* kFormat = "kdseg-preprocessed";
constexpr size_t kAlign = 64;

struct Mapping {
  void* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data) munmap(data, size);
  }
};

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return "float16";
    case at::kByte:
      return "uint8";
    case at::kShort:
      return "int16";
    default:
      return "?";
  }
}

at::ScalarType dtype_of(const std::string& name, const std::string& where) {
  if (name == "float16") return at::kHalf;
  if (name == "uint8") return at::kByte;
  if (name == "int16") return at::kShort;
  throw Error(where, "unknown array dtype \"" + name + "\"");
}

// Up to kMaxPoints rows of the (N,3) coordinates of mask's true voxels, evenly spaced.
at::Tensor point_sample(const at::Tensor& mask) {
  at::Tensor idx = mask.nonzero();  // (N,3) int64, raster order
  const int64_t n = idx.size(0);
  if (n > kMaxPoints) {
    at::Tensor rows = torch::arange(kMaxPoints, torch::kInt64).mul(n).div(kMaxPoints, "floor");
    idx = idx.index_select(0, rows);
  }
  return idx.to(torch::kInt16).contiguous();
}

json geometry_json(const CaseGeometry& g) {
  return {{"lo", g.box.lo},
          {"hi", g.box.hi},
          {"full", g.box.full},
          {"shape", g.shape},
          {"source_spacing", g.source_spacing},
          {"spacing", g.spacing}};
}

CaseGeometry geometry_from(const json& j) {
  CaseGeometry g;
  j.at("lo").get_to(g.box.lo);
  j.at("hi").get_to(g.box.hi);
  j.at("full").get_to(g.box.full);
  j.at("shape").get_to(g.shape);
  j.at("source_spacing").get_to(g.source_spacing);
  j.at("spacing").get_to(g.spacing);
  return g;
}

json plan_preprocessing_json(const PreprocessPlan& p) {
  return {{"channels", p.channels},
          {"spacing", p.spacing},
          {"fixed_shape", p.fixed_shape},
          {"crop", p.crop},
          {"normalization", p.normalization}};
}

// (path, size, mtime) of every input file, in a fixed order.
json inputs_json(const CaseInput& in) {
  json files = json::array();
  auto add = [&](const std::string& role, const std::string& path) {
    if (path.empty()) return;
    std::error_code ec;
    fs::path abs = fs::absolute(path, ec);
    const auto size = fs::file_size(path, ec);
    if (ec)
      throw Error(path, "cannot read the " + role + " file: " + ec.message(),
                  "check the data folder; was a file moved or deleted?");
    const auto mtime = fs::last_write_time(path, ec);
    files.push_back({{"role", role},
                     {"path", abs.lexically_normal().string()},
                     {"size", static_cast<uint64_t>(size)},
                     {"mtime_ns", static_cast<int64_t>(mtime.time_since_epoch().count())}});
  };
  for (int m = 0; m < kNumModalities; ++m) {
    add(kModalityNames[m], in.files.image[m]);
    if (in.files.frame[m] >= 0) files.back()["frame"] = in.files.frame[m];
  }
  add("seg", in.files.seg);
  add("soft", in.soft);
  add("ignore", in.ignore);
  return files;
}

}  // namespace

std::string hash_hex(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<uint8_t> encode_cached_case(const PreparedCase& c, const std::string& case_key,
                                        const json& plan, const json& inputs) {
  std::vector<std::pair<std::string, at::Tensor>> arrays;
  at::Tensor image = c.image.to(torch::kFloat32);
  const double max_abs = image.numel() ? image.abs().max().item<double>() : 0.0;
  if (max_abs > 65000)
    throw Error(c.id,
                "preprocessed intensities up to " + std::to_string(max_abs) +
                    " do not fit the cache's float16",
                "use normalization \"zscore_nonzero\"");
  arrays.emplace_back("image", image.to(torch::kHalf).contiguous());
  if (c.labels.defined()) arrays.emplace_back("labels", c.labels.to(torch::kUInt8).contiguous());
  if (c.soft.defined())
    arrays.emplace_back("soft", c.soft.clamp(0, 1).mul(255).round().to(torch::kUInt8).contiguous());
  if (c.ignore.defined()) arrays.emplace_back("ignore", (c.ignore != 0).to(torch::kUInt8));
  at::Tensor brain = point_sample((image != 0).any(0));
  if (brain.size(0) == 0)
    throw Error(c.id, "the preprocessed case has no non-zero voxel", "check the case's images");
  arrays.emplace_back("brain", brain);
  at::Tensor tumour =
      c.labels.defined() ? point_sample(c.labels > 0) : torch::zeros({0, 3}, torch::kInt16);
  arrays.emplace_back("tumour", tumour);

  json header = {{"format", kFormat},
                 {"version", kCacheVersion},
                 {"id", c.id},
                 {"case_key", case_key},
                 {"plan", plan},
                 {"inputs", inputs},
                 {"geometry", geometry_json(c.geometry)},
                 {"byte_order", "little"}};
  // Offsets depend on the header's length, which depends on the offsets: reserve digits.
  json desc = json::object();
  for (auto& [name, t] : arrays)
    desc[name] = {{"dtype", dtype_name(t.scalar_type())},
                  {"shape", t.sizes().vec()},
                  {"offset", uint64_t{0}},
                  {"bytes", static_cast<uint64_t>(t.nbytes())}};
  header["arrays"] = desc;
  size_t header_room = header.dump().size() + 20 * arrays.size() + 64;
  size_t offset = (16 + header_room + kAlign - 1) / kAlign * kAlign;
  for (auto& [name, t] : arrays) {
    header["arrays"][name]["offset"] = offset;
    offset = (offset + t.nbytes() + kAlign - 1) / kAlign * kAlign;
  }
  std::string text = header.dump();
  if (text.size() > header_room) throw Error(c.id, "internal: cache header grew");
  std::vector<uint8_t> bytes(offset, 0);
  std::memcpy(bytes.data(), kMagic, 8);
  const uint64_t n = text.size();
  std::memcpy(bytes.data() + 8, &n, 8);
  std::memcpy(bytes.data() + 16, text.data(), text.size());
  for (auto& [name, t] : arrays) {
    const uint64_t at = header["arrays"][name]["offset"].get<uint64_t>();
    std::memcpy(bytes.data() + at, t.data_ptr(), t.nbytes());
  }
  return bytes;
}

std::shared_ptr<const CachedCase> CachedCase::open(const std::string& path) {
  auto map = std::make_shared<Mapping>();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, std::string("cannot open cache file: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < 16) {
    ::close(fd);
    throw Error(path, "cache file is truncated", "delete it; it will be rebuilt");
  }
  map->size = static_cast<size_t>(st.st_size);
  // Private + writable: a tensor written into by mistake gets copy-on-write pages.
  void* p = mmap(nullptr, map->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(path, std::string("mmap failed: ") + std::strerror(errno));
  map->data = p;
  const auto* bytes = static_cast<const uint8_t*>(p);
  if (std::memcmp(bytes, kMagic, 8) != 0)
    throw Error(path, "not a kdseg preprocessed-case file (bad magic)");
  uint64_t n = 0;
  std::memcpy(&n, bytes + 8, 8);
  if (n > map->size - 16) throw Error(path, "cache file is truncated (header)");
  json h;
  try {
    h = json::parse(bytes + 16, bytes + 16 + n);
  } catch (const json::exception& e) {
    throw Error(path, std::string("bad cache header: ") + e.what());
  }
  if (h.value("format", "") != kFormat || h.value("version", int64_t{-1}) != kCacheVersion)
    throw Error(path,
                "cache file format " + h.value("format", std::string("?")) + " version " +
                    std::to_string(h.value("version", int64_t{-1})) + ", expected " + kFormat +
                    " version " + std::to_string(kCacheVersion),
                "delete it; it will be rebuilt");
  auto out = std::make_shared<CachedCase>();
  out->path_ = path;
  try {
    out->id_ = h.at("id").get<std::string>();
    out->case_key_ = h.at("case_key").get<std::string>();
    out->geometry_ = geometry_from(h.at("geometry"));
    for (auto& [name, a] : h.at("arrays").items()) {
      const auto offset = a.at("offset").get<uint64_t>(), nbytes = a.at("bytes").get<uint64_t>();
      const auto shape = a.at("shape").get<std::vector<int64_t>>();
      const auto dtype = dtype_of(a.at("dtype").get<std::string>(), path);
      if (offset > map->size || nbytes > map->size - offset)
        throw Error(path, "cache file is truncated (array " + name + ")",
                    "delete it; it will be rebuilt");
      at::Tensor t = torch::from_blob(
          static_cast<uint8_t*>(map->data) + offset, shape, [map](void*) {},
          torch::TensorOptions().dtype(dtype));
      if (static_cast<uint64_t>(t.nbytes()) != nbytes)
        throw Error(path, "array " + name + " size does not match its shape");
      if (name == "image")
        out->image_ = t;
      else if (name == "labels")
        out->labels_ = t;
      else if (name == "soft")
        out->soft_ = t;
      else if (name == "ignore")
        out->ignore_ = t;
      else if (name == "brain")
        out->brain_ = t;
      else if (name == "tumour")
        out->tumour_ = t;
    }
  } catch (const json::exception& e) {
    throw Error(path, std::string("bad cache header: ") + e.what(),
                "delete it; it will be rebuilt");
  }
  if (!out->image_.defined() || !out->brain_.defined() || !out->tumour_.defined())
    throw Error(path, "cache file lacks the image or point arrays", "delete it");
  return out;
}

PreparedCase CachedCase::prepared() const {
  PreparedCase c;
  c.id = id_;
  c.geometry = geometry_;
  c.image = image_.to(torch::kFloat32);
  if (labels_.defined()) c.labels = labels_.clone();
  if (soft_.defined()) c.soft = soft_.to(torch::kFloat32).div(255);
  if (ignore_.defined()) c.ignore = ignore_.clone();
  return c;
}

std::string default_cache_dir() {
  if (const char* d = std::getenv("KDSEG_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d)
    return (fs::path(d) / "kdseg").string();
  if (const char* d = std::getenv("HOME"); d && *d)
    return (fs::path(d) / ".cache" / "kdseg").string();
  return ".kdseg-cache";
}

void check_cache_location(const std::string& cache_dir, const std::vector<std::string>& data_dirs) {
  std::error_code ec;
  const fs::path cache = fs::weakly_canonical(fs::absolute(cache_dir), ec);
  for (const auto& d : data_dirs) {
    const fs::path data = fs::weakly_canonical(fs::absolute(d), ec);
    auto rel = cache.lexically_relative(data);
    if (!rel.empty() && *rel.begin() != "..")
      throw Error("--cache " + cache_dir,
                  "the preprocessing cache would lie inside the data "
                  "folder " +
                      d,
                  "pick a cache folder outside the data (default: " + default_cache_dir() + ")");
  }
}

PreprocessCache::PreprocessCache(std::string dir, PreprocessPlan plan)
    : dir_(dir.empty() ? default_cache_dir() : std::move(dir)), plan_(std::move(plan)) {
  validate_plan(plan_);
  plan_json_ = plan_preprocessing_json(plan_);
  plan_key_ = hash_hex("kdseg-cache v" + std::to_string(kCacheVersion) + " " + plan_json_.dump());
}

std::string PreprocessCache::plan_dir() const {
  return (fs::path(dir_) / plan_key_).string();
}

std::string PreprocessCache::case_key(const CaseInput& in) const {
  return hash_hex(plan_key_ + " " + in.convention.name + " " + inputs_json(in).dump());
}

std::string PreprocessCache::case_path(const CaseInput& in) const {
  return (fs::path(plan_dir()) / (in.files.id + "." + case_key(in) + ".kdc")).string();
}

std::shared_ptr<const CachedCase> PreprocessCache::get(const CaseInput& in, bool* built) const {
  const json inputs = inputs_json(in);
  const std::string key = hash_hex(plan_key_ + " " + in.convention.name + " " + inputs.dump());
  const fs::path path = fs::path(plan_dir()) / (in.files.id + "." + key + ".kdc");
  std::error_code ec;
  if (fs::exists(path, ec)) {
    try {
      auto c = CachedCase::open(path.string());
      if (c->case_key() == key && c->id() == in.files.id) {
        if (built) *built = false;
        return c;
      }
    } catch (const Error&) {
      // unreadable or from another version: rebuilt below, written over it
    }
  }
  CaseData data = load_case(in.files, in.convention);
  std::optional<Volume> soft;
  std::optional<LabelMap> ignore;
  if (!in.soft.empty()) soft = read_volume(in.soft);
  if (!in.ignore.empty()) ignore = read_labels(in.ignore);
  PreparedCase prepared =
      preprocess_case(data, plan_, soft ? &*soft : nullptr, ignore ? &*ignore : nullptr);
  std::vector<uint8_t> bytes = encode_cached_case(prepared, key, plan_json_, inputs);
  fs::create_directories(plan_dir(), ec);
  if (ec)
    throw Error(plan_dir(), "cannot create the cache folder: " + ec.message(),
                "pass --cache DIR with a writable folder");
  const fs::path plan_file = fs::path(plan_dir()) / "plan.json";
  if (!fs::exists(plan_file, ec)) {
    std::string text =
        json{{"format", "kdseg-cache-plan"}, {"version", kCacheVersion}, {"plan", plan_json_}}.dump(
            2) +
        "\n";
    write_file_atomic(plan_file.string(), reinterpret_cast<const uint8_t*>(text.data()),
                      text.size());
  }
  write_file_atomic(path.string(), bytes.data(), bytes.size());
  if (built) *built = true;
  return CachedCase::open(path.string());
}

std::vector<std::shared_ptr<const CachedCase>> PreprocessCache::get_all(
    const std::vector<CaseInput>& inputs, int threads, int* n_built) const {
  std::vector<std::shared_ptr<const CachedCase>> out(inputs.size());
  std::vector<std::string> failures(inputs.size());
  std::atomic<int> built_count{0};
  parallel_for(static_cast<int64_t>(inputs.size()), threads, [&](int64_t i) {
    try {
      bool built = false;
      out[i] = get(inputs[i], &built);
      if (built) ++built_count;
    } catch (const std::exception& e) {
      failures[i] = inputs[i].files.id + ": " + e.what();
    }
  });
  if (n_built) *n_built = built_count.load();
  std::string all;
  int n_failed = 0;
  for (const auto& f : failures)
    if (!f.empty()) {
      all += "\n  " + f;
      ++n_failed;
    }
  if (n_failed)
    throw Error(dir_, std::to_string(n_failed) + " case(s) could not be preprocessed:" + all);
  return out;
}

}  // namespace kdseg
