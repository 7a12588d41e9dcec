#pragma once
// The checkpoint file read as data, never as code, and without LibTorch (docs/checkpoint.md).
//
// A kdseg checkpoint is what LibTorch's torch::pickle_save writes for a dict: a zip archive
// (stored, uncompressed records) of
//   <prefix>/data.pkl   a pickle (protocol 2) of the dict, each tensor a reference to a record
//   <prefix>/data/<k>   each tensor storage's bytes (little-endian)
//   <prefix>/version    the archive's version ("3\n"); newer LibTorch adds byteorder etc.
// This reader checks every byte of the container (zip headers against the central directory,
// each record's CRC-32) and runs the pickle on a small stack machine that knows only the
// opcodes and the globals kdseg's writer uses: tensors (torch._utils._rebuild_tensor_v2 on
// torch.<Type>Storage records), the type tags of torch.jit._pickle, collections.OrderedDict()
// (an empty dict: a tensor's backward hooks), strings, numbers, booleans, None, lists, tuples and
// dicts. Any other global is refused by name; nothing in the file is ever called.
//
// The checkpoint dict (docs/design.md §2) then carries "digest": "sha256:<64 hex>", the SHA-256 of
// the canonical encoding of every other entry (content_digest below;
// python/kdseg/checkpoint_file.py computes the same bytes from the dict torch.load gives).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kdseg {

constexpr const char* kCheckpointFormat = "kdseg-checkpoint";
// 2: "digest" (required). 1: no digest, still read (with a warning): kdseg before the digest.
constexpr int64_t kCheckpointVersion = 2;
constexpr int64_t kCheckpointVersionWithoutDigest = 1;

// A tensor of the pickle: a view (sizes, strides, offset in elements) of one storage record.
struct PickleTensor {
  std::string dtype;  // "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                      // "int8", "uint8" or "bool"
  size_t element_size = 0;
  std::vector<int64_t> sizes, strides;
  int64_t offset = 0;   // elements from the storage's start
  std::string storage;  // the record's key, e.g. "0" for <prefix>/data/0
  int64_t storage_numel = 0;
  const uint8_t* data = nullptr;  // the storage's bytes, inside PickleArchive::bytes
  bool requires_grad = false;
  int64_t numel() const;
  bool is_contiguous() const;  // row-major with no gaps
};

// A value of the pickle. Dicts keep their entries in file order (keys[i] → items[i]).
struct PickleValue {
  enum class Kind { none, boolean, integer, real, string, list, tuple, dict, tensor };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string string;
  std::vector<PickleValue> items;  // list and tuple items, dict values
  std::vector<PickleValue> keys;   // dict keys (strings or integers, no duplicates)
  // The container's element types as the writer tagged them (torch.jit._pickle), e.g.
  // "Dict[str, Tensor]" or "List[int]"; empty when untagged. Checked against the items.
  std::string type_tag;
  std::shared_ptr<const PickleTensor> tensor;

  // The dict entry `key`, or nullptr (dicts only).
  const PickleValue* find(const std::string& key) const;
};
const char* kind_name(PickleValue::Kind kind);

// A container's type tag, e.g. "Dict[str, Tensor]": name (Any Tensor int float bool str NoneType
// List Dict Optional Tuple) and arguments.
struct TypeTag {
  std::string name;
  std::vector<TypeTag> args;
};
// Parses a type tag; throws kdseg::Error naming `where` for any other text.
TypeTag parse_type_tag(const std::string& text, const std::string& where);

// A parsed archive: the pickled value and the file bytes its tensors point into.
struct PickleArchive {
  std::shared_ptr<const std::vector<uint8_t>> bytes;
  PickleValue root;
};

// Parses a torch::pickle_save archive; throws kdseg::Error naming `where` for anything that is
// not such an archive, is damaged, or uses a global outside the allow-list.
PickleArchive read_pickle_archive(std::shared_ptr<const std::vector<uint8_t>> bytes,
                                  const std::string& where);

// "sha256:<64 hex>": the SHA-256 of the canonical encoding of `dict`'s entries other than
// "digest" (docs/checkpoint.md "The digest"): entries sorted by their encoded keys; tensors as
// dtype, shape and their elements in row-major order. Type tags and requires_grad are left out.
std::string content_digest(const PickleValue& dict);

// A parsed, verified checkpoint: format, version and digest checked, "arch" and "config"
// strings, "state_dict" a dict of string → tensor.
struct CheckpointFile {
  PickleArchive archive;
  int64_t version = 0;
  std::string digest;                 // as stored ("" in a version 1 file without one)
  std::vector<std::string> warnings;  // e.g. a version 1 file has no digest to check
  const PickleValue& dict() const { return archive.root; }
};

// read_pickle_archive + the checkpoint's own checks; throws kdseg::Error naming `where`.
CheckpointFile parse_checkpoint(std::shared_ptr<const std::vector<uint8_t>> bytes,
                                const std::string& where);

}  // namespace kdseg
