#pragma once
// The preprocessing cache (docs/design.md §2 "Preprocessing cache"): every case is
// preprocessed once per plan and stored compactly; every model and seed that uses the same plan
// shares the files.
//
// Location: `--cache DIR`; by default default_cache_dir() ($KDSEG_CACHE_DIR, else
// $XDG_CACHE_HOME/kdseg, else ~/.cache/kdseg) — never inside a data folder
// (check_cache_location refuses that).
//
// Layout:
//   DIR/<plan key>/plan.json              the plan's preprocessing fields (for people; not read)
//   DIR/<plan key>/<ID>.<case key>.kdc    one file per case
// plan key  = hash of (kCacheVersion, the plan fields that change preprocessing: channels,
//             spacing, fixed_shape, crop, normalization). Patch, stride and regions do not enter
//             it, so unet, resunet and student runs share one cache.
// case key  = hash of (plan key, label convention, and for each input file — 4 images, label
//             map, soft targets, ignore mask — its absolute path, size and mtime in ns).
// Changing an input file (size or mtime), the plan or kCacheVersion changes the key: the old file
// is simply not found any more (a miss, rebuilt); stale files are left for the user to delete.
//
// File format (.kdc), version kCacheVersion, little-endian:
//   bytes 0-7    magic "KDSEGPC\0"
//   bytes 8-15   uint64 n = length of the JSON header
//   bytes 16..   JSON header (n bytes): {"format": "kdseg-preprocessed", "version": 1, "id",
//                "case_key", "plan", "inputs": [{"path","size","mtime_ns"}], "geometry": {"lo",
//                "hi", "full", "shape", "source_spacing", "spacing"}, "arrays": {name: {"dtype",
//                "shape", "offset", "bytes"}}}
//   arrays       each at its "offset" (from the file start, 64-byte aligned), C order:
//     image     float16 (C,D,H,W)  preprocessed channels (z-scores; background exactly 0)
//     labels    uint8 (D,H,W)      internal labels {0,1,2,4}            (labelled cases only)
//     soft      uint8 (3,D,H,W)    soft targets WT,TC,ET x 255          (when given)
//     ignore    uint8 (D,H,W)      1 = excluded from the loss            (when given)
//     brain     int16 (N,3)        up to kMaxPoints brain voxels (non-zero in any channel),
//                                  evenly spaced in raster order: where random patches centre
//     tumour    int16 (M,3)        up to kMaxPoints voxels with label > 0: foreground centres
// Written atomically (temporary file + rename); read with mmap (private, copy-on-write: writing
// into a tensor never touches the file). A 1 mm BraTS case (brain box ~140x170x140) takes ~28 MB.
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "kdseg/data/preprocess.h"
#include "kdseg/io/dataset.h"
#include "kdseg/models/plan.h"

namespace kdseg {

constexpr int64_t kCacheVersion = 1;
constexpr int64_t kMaxPoints = 20000;

// One case's input files.
struct CaseInput {
  CaseFiles files;                                 // from discover_dataset: images (+ seg)
  LabelConvention convention = Layout::brats2021;  // the folder's layout
  std::string soft;    // pseudo-label soft targets, 3-channel NIfTI (WT,TC,ET in [0,1]); "" none
  std::string ignore;  // pseudo-label ignore mask NIfTI (non-zero = ignore); "" none
};

// A read-only, memory-mapped cache file. Tensors share the mapping (it lives as long as any of
// them); they are CPU tensors to read, slice and convert.
class CachedCase {
 public:
  // Maps and checks a .kdc file (magic, version, sizes). Throws kdseg::Error naming it.
  static std::shared_ptr<const CachedCase> open(const std::string& path);

  const std::string& id() const { return id_; }
  const std::string& path() const { return path_; }
  const std::string& case_key() const { return case_key_; }
  const CaseGeometry& geometry() const { return geometry_; }
  bool labelled() const { return labels_.defined(); }

  at::Tensor image() const { return image_; }           // (C,D,H,W) float16
  at::Tensor labels() const { return labels_; }         // (D,H,W) uint8, or undefined
  at::Tensor soft() const { return soft_; }             // (3,D,H,W) uint8 (x/255), or undefined
  at::Tensor ignore() const { return ignore_; }         // (D,H,W) uint8, or undefined
  at::Tensor brain_points() const { return brain_; }    // (N,3) int16, N >= 1
  at::Tensor tumour_points() const { return tumour_; }  // (M,3) int16, M >= 0

  // Float copies in PreparedCase form (whole-case validation / inference on cached data).
  PreparedCase prepared() const;

 private:
  std::string path_, id_, case_key_;
  CaseGeometry geometry_;
  at::Tensor image_, labels_, soft_, ignore_, brain_, tumour_;
};

// Serialises a preprocessed case in the format above (what the cache writes).
std::vector<uint8_t> encode_cached_case(const PreparedCase& c, const std::string& case_key,
                                        const nlohmann::json& plan, const nlohmann::json& inputs);

// $KDSEG_CACHE_DIR, else $XDG_CACHE_HOME/kdseg, else $HOME/.cache/kdseg, else ./.kdseg-cache.
std::string default_cache_dir();
// Throws kdseg::Error when `cache_dir` is one of `data_dirs` or lies inside one.
void check_cache_location(const std::string& cache_dir, const std::vector<std::string>& data_dirs);

class PreprocessCache {
 public:
  // dir "" = default_cache_dir(). Validates the plan.
  PreprocessCache(std::string dir, PreprocessPlan plan);

  const std::string& dir() const { return dir_; }
  const std::string& plan_key() const { return plan_key_; }
  std::string plan_dir() const;                      // dir/<plan key>
  std::string case_key(const CaseInput& in) const;   // stats the input files
  std::string case_path(const CaseInput& in) const;  // dir/<plan key>/<ID>.<case key>.kdc

  // The cached case: opened when present and valid, else built (load_case + preprocess_case)
  // and written first. *built tells which. Throws kdseg::Error naming the case.
  std::shared_ptr<const CachedCase> get(const CaseInput& in, bool* built = nullptr) const;

  // get() for every case on `threads` threads (0 = all cores). A case that fails does not stop
  // the others; at the end one kdseg::Error lists every failure. n_built counts rebuilt files.
  std::vector<std::shared_ptr<const CachedCase>> get_all(const std::vector<CaseInput>& inputs,
                                                         int threads = 1,
                                                         int* n_built = nullptr) const;

 private:
  std::string dir_;
  PreprocessPlan plan_;
  nlohmann::json plan_json_;
  std::string plan_key_;
};

// 64-bit FNV-1a of `text`, as 16 hex digits (cache keys; not a security hash).
std::string hash_hex(const std::string& text);

}  // namespace kdseg
