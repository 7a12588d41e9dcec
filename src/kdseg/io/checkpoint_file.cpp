#include "kdseg/io/checkpoint_file.h"

#include <libdeflate.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <unordered_map>

#include "kdseg/util/error.h"
#include "kdseg/util/sha256.h"

namespace kdseg {
namespace {

const char* const kDamagedHint =
    "the file is damaged (truncated, altered or not completely copied): copy it again from where "
    "it was made, or use another checkpoint";
const char* const kNotOursHint = "kdseg reads the .pt files that kdseg train writes";

// A fuzzing build (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the libFuzzer convention, set for this
// file by fuzz/CMakeLists.txt) still computes the CRC-32s and the digest but lets a mismatch pass,
// so that mutated inputs reach the pickle machine behind them. Never in a normal build.
#if defined(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
constexpr bool kSumsMustMatch = false;
#else
constexpr bool kSumsMustMatch = true;
#endif

uint16_t le16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);
}
uint32_t le32(const uint8_t* p) {
  return uint32_t{le16(p)} | uint32_t{le16(p + 2)} << 16;
}
uint64_t le64(const uint8_t* p) {
  return uint64_t{le32(p)} | uint64_t{le32(p + 4)} << 32;
}

// Printable ASCII of untrusted text for an error message (at most 80 characters).
std::string printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 32 && u < 127) {
      out += c;
    } else {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return s.size() > 80 ? out + "..." : out;
}

// ------------------------------------------------------------------------------------- the zip

struct ZipRecord {
  std::string name;
  const uint8_t* data = nullptr;
  uint64_t size = 0;
};

// The records of a zip archive as LibTorch's writer (miniz, PyTorchStreamWriter) makes it: every
// byte is accounted for — each local header agrees with its central directory entry, the only
// extra field is the writer's "FB" padding of 'Z's, records follow one another with no gaps,
// each one's CRC-32 matches, and the end records agree with the central directory.
std::vector<ZipRecord> read_zip(const uint8_t* p, size_t n, const std::string& where) {
  auto damaged = [&](const std::string& what) {
    return Error(where, "damaged checkpoint (" + what + ")", kDamagedHint);
  };
  if (n < 4 || le32(p) != 0x04034b50)
    throw Error(where,
                n == 0 ? "not a kdseg checkpoint (the file is empty)"
                       : "not a kdseg checkpoint (not a zip archive, which torch::pickle_save "
                         "writes)",
                n == 0 ? kDamagedHint : kNotOursHint);
  if (n < 22) throw damaged("too short for a zip archive: " + std::to_string(n) + " bytes");
  const uint8_t* eocd = p + n - 22;
  if (le32(eocd) != 0x06054b50)
    throw damaged("no zip end record at its end: truncated, or bytes were added");
  if (le16(eocd + 4) != 0 || le16(eocd + 6) != 0 || le16(eocd + 20) != 0 ||
      le16(eocd + 8) != le16(eocd + 10))
    throw damaged("zip end record: disk numbers, entry counts or comment length");
  uint64_t entries = le16(eocd + 10), cd_size = le32(eocd + 12), cd_offset = le32(eocd + 16);
  uint64_t cd_end = n - 22;                              // where the central directory must end
  if (n >= 22 + 20 && le32(p + n - 42) == 0x07064b50) {  // zip64 locator + end record
    const uint8_t* loc = p + n - 42;
    const uint64_t rec_offset = le64(loc + 8);
    if (le32(loc + 4) != 0 || le32(loc + 16) != 1 || n < 42 + 56 || rec_offset != n - 42 - 56)
      throw damaged("zip64 locator");
    const uint8_t* rec = p + rec_offset;
    if (le32(rec) != 0x06064b50 || le64(rec + 4) != 44 || le16(rec + 12) != 0x031e ||
        le16(rec + 14) != 45 || le32(rec + 16) != 0 || le32(rec + 20) != 0 ||
        le64(rec + 24) != le64(rec + 32))
      throw damaged("zip64 end record");
    auto agrees = [](uint64_t small, uint64_t marker, uint64_t big) {
      return small == big || small == marker;
    };
    if (!agrees(entries, 0xffff, le64(rec + 32)) || !agrees(cd_size, 0xffffffff, le64(rec + 40)) ||
        !agrees(cd_offset, 0xffffffff, le64(rec + 48)))
      throw damaged("the zip end records disagree");
    entries = le64(rec + 32);
    cd_size = le64(rec + 40);
    cd_offset = le64(rec + 48);
    cd_end = rec_offset;
  }
  if (cd_offset > cd_end || cd_end - cd_offset != cd_size)
    throw damaged("zip central directory offset or size");
  if (entries == 0 || entries > cd_size / 46) throw damaged("zip entry count");

  struct Central {
    uint16_t made_by, needed, flags, time, date;
    uint32_t crc, size, external, local;
    std::string name;
  };
  std::vector<Central> central;
  uint64_t pos = cd_offset;
  for (uint64_t i = 0; i < entries; ++i) {
    if (cd_end - pos < 46) throw damaged("zip central directory ends inside an entry");
    const uint8_t* c = p + pos;
    Central e{le16(c + 4),  le16(c + 6),  le16(c + 8),  le16(c + 12), le16(c + 14),
              le32(c + 16), le32(c + 20), le32(c + 38), le32(c + 42), {}};
    const uint16_t name_len = le16(c + 28);
    if (le32(c) != 0x02014b50) throw damaged("zip central directory entry signature");
    if (le16(c + 10) != 0)
      throw Error(where, "not a kdseg checkpoint (a compressed zip record)", kNotOursHint);
    if (le32(c + 24) != e.size || (e.flags & ~0x0808) != 0 || le16(c + 30) != 0 ||
        le16(c + 32) != 0 || le16(c + 34) != 0 || le16(c + 36) != 0 || name_len == 0)
      throw damaged("zip central directory entry " + std::to_string(i));
    if (!central.empty() && (e.made_by != central[0].made_by || e.external != central[0].external))
      throw damaged("zip central directory entries disagree");
    if (cd_end - pos - 46 < name_len) throw damaged("zip central directory ends inside a name");
    e.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
    central.push_back(std::move(e));
    pos += 46 + name_len;
  }
  if (pos != cd_end) throw damaged("zip central directory size");

  std::vector<ZipRecord> records;
  uint64_t cur = 0;
  for (const Central& e : central) {
    const std::string rec = "zip record " + printable(e.name);
    if (e.local != cur) throw damaged(rec + ": not where the previous record ends");
    if (cd_offset - cur < 30) throw damaged(rec + ": its header runs into the directory");
    const uint8_t* l = p + cur;
    const bool descriptor = e.flags & 0x0008;
    const uint16_t name_len = le16(l + 26), extra_len = le16(l + 28);
    if (le32(l) != 0x04034b50 || le16(l + 4) != e.needed || le16(l + 6) != e.flags ||
        le16(l + 8) != 0 || le16(l + 10) != e.time || le16(l + 12) != e.date ||
        le32(l + 14) != (descriptor ? 0 : e.crc) || le32(l + 18) != (descriptor ? 0 : e.size) ||
        le32(l + 22) != (descriptor ? 0 : e.size) || name_len != e.name.size())
      throw damaged(rec + ": its header disagrees with the central directory");
    if (cd_offset - cur - 30 < uint64_t{name_len} + extra_len + e.size)
      throw damaged(rec + ": runs into the directory");
    if (std::memcmp(l + 30, e.name.data(), name_len) != 0)
      throw damaged(rec + ": its name differs in the central directory");
    const uint8_t* extra = l + 30 + name_len;
    if (extra_len > 0) {  // the writer's alignment padding: "FB", length, 'Z' * length
      if (extra_len < 4 || le16(extra) != 0x4246 || le16(extra + 2) != extra_len - 4 ||
          std::any_of(extra + 4, extra + extra_len, [](uint8_t b) { return b != 'Z'; }))
        throw damaged(rec + ": its header padding");
    }
    const uint8_t* data = extra + extra_len;
    const uint32_t crc = libdeflate_crc32(0, data, e.size);
    if (crc != e.crc && kSumsMustMatch) throw damaged(rec + ": CRC-32 mismatch");
    cur += 30 + name_len + extra_len + uint64_t{e.size};
    if (descriptor) {
      if (cd_offset - cur < 16 || le32(p + cur) != 0x08074b50 || le32(p + cur + 4) != e.crc ||
          le32(p + cur + 8) != e.size || le32(p + cur + 12) != e.size)
        throw damaged(rec + ": its data descriptor");
      cur += 16;
    }
    records.push_back({e.name, data, e.size});
  }
  if (cur != cd_offset) throw damaged("bytes between the last zip record and the directory");
  return records;
}

// ------------------------------------------------------------------------------- type tags

}  // namespace

TypeTag parse_type_tag(const std::string& s, const std::string& where) {
  size_t i = 0;
  auto bad = [&] {
    return Error(where, "damaged checkpoint (type tag \"" + printable(s) + "\")", kDamagedHint);
  };
  std::function<TypeTag(int)> parse = [&](int depth) -> TypeTag {
    if (depth > 16) throw bad();
    TypeTag t;
    while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_'))
      t.name += s[i++];
    static const std::map<std::string, std::pair<int, int>> kArity{
        {"Any", {0, 0}},  {"Tensor", {0, 0}},   {"int", {0, 0}},      {"float", {0, 0}},
        {"bool", {0, 0}}, {"str", {0, 0}},      {"NoneType", {0, 0}}, {"List", {1, 1}},
        {"Dict", {2, 2}}, {"Optional", {1, 1}}, {"Tuple", {1, 16}}};
    const auto known = kArity.find(t.name);
    if (known == kArity.end()) throw bad();
    if (known->second.second > 0) {
      if (i >= s.size() || s[i++] != '[') throw bad();
      for (;;) {
        t.args.push_back(parse(depth + 1));
        if (i < s.size() && s[i] == ']') {
          ++i;
          break;
        }
        if (i + 1 >= s.size() || s[i] != ',' || s[i + 1] != ' ') throw bad();
        i += 2;
      }
      if (static_cast<int>(t.args.size()) < known->second.first ||
          static_cast<int>(t.args.size()) > known->second.second)
        throw bad();
    }
    return t;
  };
  TypeTag t = parse(0);
  if (i != s.size()) throw bad();
  return t;
}

namespace {

bool conforms(const PickleValue& v, const TypeTag& t) {
  using K = PickleValue::Kind;
  const std::string& n = t.name;
  if (n == "Any") return true;
  if (n == "Tensor") return v.kind == K::tensor;
  if (n == "int") return v.kind == K::integer;
  if (n == "float") return v.kind == K::real;
  if (n == "bool") return v.kind == K::boolean;
  if (n == "str") return v.kind == K::string;
  if (n == "NoneType") return v.kind == K::none;
  if (n == "Optional") return v.kind == K::none || conforms(v, t.args[0]);
  if (n == "List")
    return v.kind == K::list && std::all_of(v.items.begin(), v.items.end(),
                                            [&](const auto& x) { return conforms(x, t.args[0]); });
  if (n == "Tuple") {
    if (v.kind != K::tuple || v.items.size() != t.args.size()) return false;
    for (size_t i = 0; i < v.items.size(); ++i)
      if (!conforms(v.items[i], t.args[i])) return false;
    return true;
  }
  if (n == "Dict") {
    if (v.kind != K::dict) return false;
    for (size_t i = 0; i < v.items.size(); ++i)
      if (!conforms(v.keys[i], t.args[0]) || !conforms(v.items[i], t.args[1])) return false;
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------- the unpickler

struct StorageType {
  const char* dtype;
  size_t element_size;
};
const std::map<std::string, StorageType>& storage_types() {
  static const std::map<std::string, StorageType> kTypes{
      {"FloatStorage", {"float32", 4}}, {"DoubleStorage", {"float64", 8}},
      {"HalfStorage", {"float16", 2}},  {"BFloat16Storage", {"bfloat16", 2}},
      {"LongStorage", {"int64", 8}},    {"IntStorage", {"int32", 4}},
      {"ShortStorage", {"int16", 2}},   {"CharStorage", {"int8", 1}},
      {"ByteStorage", {"uint8", 1}},    {"BoolStorage", {"bool", 1}}};
  return kTypes;
}

// The pickle of data.pkl on a stack machine that knows the opcodes kdseg's writer (LibTorch's
// Pickler, protocol 2) emits and the allow-listed globals; REDUCE only ever builds a tensor, an
// empty dict or a tagged container — it never calls anything named by the file.
class Unpickler {
 public:
  Unpickler(const ZipRecord& pkl, const std::map<std::string, ZipRecord>& storages,
            const std::string& where)
      : p_(pkl.data), n_(pkl.size), storages_(storages), where_(where) {}

  PickleValue run() {
    if (n_ < 2 || p_[0] != 0x80 || p_[1] != 2)
      throw Error(where_, "not a kdseg checkpoint (data.pkl is not a protocol 2 pickle)",
                  kNotOursHint);
    pos_ = 2;
    while (pos_ < n_) {
      const size_t at = pos_;
      const uint8_t op = p_[pos_++];
      switch (op) {
        case 'c': {
          const std::string module = line();  // two lines: the module, then the name
          push_global(module, line());
          break;
        }
        case 'q':
          memoize(take(1)[0]);
          break;
        case 'r':
          memoize(le32(take(4)));
          break;
        case 'h':
          recall(take(1)[0]);
          break;
        case 'j':
          recall(le32(take(4)));
          break;
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '}':
          push_value(container(PickleValue::Kind::dict));
          break;
        case ']':
          push_value(container(PickleValue::Kind::list));
          break;
        case ')':
          push_tuple({});
          break;
        case 't':
          push_tuple(pop_to_mark());
          break;
        case 0x85:
          push_tuple(pop_n(1));
          break;
        case 0x86:
          push_tuple(pop_n(2));
          break;
        case 0x87:
          push_tuple(pop_n(3));
          break;
        case 'u':
          set_items(pop_to_mark());
          break;
        case 's':
          set_items(pop_n(2));
          break;
        case 'e':
          append(pop_to_mark());
          break;
        case 'a':
          append(pop_n(1));
          break;
        case 'N':
          push_value(PickleValue{});
          break;
        case 0x88:
          push_value(boolean(true));
          break;
        case 0x89:
          push_value(boolean(false));
          break;
        case 'J':
          push_value(integer(static_cast<int32_t>(le32(take(4)))));
          break;
        case 'K':
          push_value(integer(take(1)[0]));
          break;
        case 'M':
          push_value(integer(le16(take(2))));
          break;
        case 0x8a:
          push_value(integer(long1()));
          break;
        case 'G':
          push_value(real());
          break;
        case 'X':
          push_value(unicode());
          break;
        case 'Q':
          persistent_id();
          break;
        case 'R':
          reduce();
          break;
        case '.':
          return stop();
        default:
          throw damaged("pickle opcode 0x" + hex(op) + " at byte " + std::to_string(at) +
                        ", which kdseg's writer never writes");
      }
    }
    throw damaged("the pickle ends without its STOP opcode");
  }

 private:
  struct Storage {
    std::string key;
    StorageType type;
    int64_t numel;
    const uint8_t* data;
  };
  enum class Global { rebuild_tensor, storage_type, ordered_dict, restore_type_tag, build_list };
  // A stack entry: a value, or one of the pickle's own objects that never become values.
  struct Item {
    enum class Kind { value, global, storage, raw_tuple } kind = Kind::value;
    PickleValue value;
    int depth = 0;     // nesting of `value`
    size_t nodes = 1;  // values inside `value`, itself included (the copy budget)
    Global global{};
    std::string detail;  // a storage type's name, a build_*list's element type
    std::shared_ptr<const Storage> storage;
    std::vector<Item> tuple;  // raw_tuple: a tuple holding a global or a storage
  };
  static constexpr int kMaxDepth = 64;
  static constexpr size_t kMaxNodes = size_t{1} << 20;

  static std::string hex(uint8_t b) {
    static const char* kHex = "0123456789abcdef";
    return {kHex[b >> 4], kHex[b & 15]};
  }
  Error damaged(const std::string& what) const {
    return Error(where_, "damaged checkpoint (" + what + ")", kDamagedHint);
  }
  const uint8_t* take(size_t k) {
    if (n_ - pos_ < k) throw damaged("the pickle ends inside an opcode");
    const uint8_t* q = p_ + pos_;
    pos_ += k;
    return q;
  }
  std::string line() {
    const size_t start = pos_;
    while (pos_ < n_ && p_[pos_] != '\n' && pos_ - start < 128) ++pos_;
    if (pos_ >= n_ || p_[pos_] != '\n') throw damaged("a pickle global's name");
    return std::string(reinterpret_cast<const char*>(p_ + start), pos_++ - start);
  }
  void charge(size_t nodes) {
    nodes_ += nodes;
    if (nodes_ > kMaxNodes)
      throw damaged("the pickle builds over " + std::to_string(kMaxNodes) + " values");
  }
  static PickleValue container(PickleValue::Kind kind) {
    PickleValue v;
    v.kind = kind;
    return v;
  }
  static PickleValue boolean(bool b) {
    PickleValue v;
    v.kind = PickleValue::Kind::boolean;
    v.boolean = b;
    return v;
  }
  static PickleValue integer(int64_t i) {
    PickleValue v;
    v.kind = PickleValue::Kind::integer;
    v.integer = i;
    return v;
  }
  int64_t long1() {
    const uint8_t k = take(1)[0];
    if (k > 8) throw damaged("an integer wider than 64 bits");
    const uint8_t* b = take(k);
    uint64_t u = 0;
    for (int i = 0; i < k; ++i) u |= uint64_t{b[i]} << (8 * i);
    if (k > 0 && k < 8 && (b[k - 1] & 0x80)) u |= ~uint64_t{0} << (8 * k);  // sign-extend
    return static_cast<int64_t>(u);
  }
  PickleValue real() {
    const uint8_t* b = take(8);
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u = u << 8 | b[i];  // big-endian
    PickleValue v;
    v.kind = PickleValue::Kind::real;
    std::memcpy(&v.real, &u, 8);
    return v;
  }
  static bool valid_utf8(const uint8_t* s, size_t n) {
    for (size_t i = 0; i < n;) {
      const uint8_t c = s[i];
      size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (len == 0 || n - i < len) return false;
      uint32_t cp = len == 1 ? c : c & (0x7f >> len);
      for (size_t k = 1; k < len; ++k) {
        if ((s[i + k] & 0xc0) != 0x80) return false;
        cp = cp << 6 | (s[i + k] & 0x3f);
      }
      static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
      i += len;
    }
    return true;
  }
  PickleValue unicode() {
    const uint32_t k = le32(take(4));
    const uint8_t* s = take(k);
    if (!valid_utf8(s, k)) throw damaged("a string that is not UTF-8");
    PickleValue v;
    v.kind = PickleValue::Kind::string;
    v.string.assign(reinterpret_cast<const char*>(s), k);
    return v;
  }

  void push_value(PickleValue v) {
    charge(1);
    Item it;
    it.value = std::move(v);
    stack_.push_back(std::move(it));
  }
  size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  Item pop() {
    if (stack_.size() <= fence()) throw damaged("the pickle's stack underflows");
    Item it = std::move(stack_.back());
    stack_.pop_back();
    return it;
  }
  std::vector<Item> pop_n(size_t k) {
    std::vector<Item> out(k);
    for (size_t i = k; i-- > 0;) out[i] = pop();
    return out;
  }
  std::vector<Item> pop_to_mark() {
    if (marks_.empty()) throw damaged("the pickle closes a mark it never opened");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Item> out(std::make_move_iterator(stack_.begin() + static_cast<ptrdiff_t>(m)),
                          std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return out;
  }
  Item& top() {
    if (stack_.size() <= fence()) throw damaged("the pickle's stack underflows");
    return stack_.back();
  }
  static void nest(Item& outer, const Item& inner) {
    outer.depth = std::max(outer.depth, inner.depth + 1);
    outer.nodes += inner.nodes;
  }
  void check_depth(const Item& it) const {
    if (it.depth > kMaxDepth)
      throw damaged("values nested over " + std::to_string(kMaxDepth) + " deep");
  }
  void require_value(const Item& it, const char* what) const {
    if (it.kind != Item::Kind::value) throw damaged(std::string("a pickle object as ") + what);
  }

  void push_tuple(std::vector<Item> items) {
    charge(1);
    Item t;
    const bool raw = std::any_of(items.begin(), items.end(),
                                 [](const Item& i) { return i.kind != Item::Kind::value; });
    if (raw) {
      t.kind = Item::Kind::raw_tuple;
      t.tuple = std::move(items);
    } else {
      t.value.kind = PickleValue::Kind::tuple;
      for (Item& i : items) {
        nest(t, i);
        t.value.items.push_back(std::move(i.value));
      }
      check_depth(t);
    }
    stack_.push_back(std::move(t));
  }
  void set_items(std::vector<Item> kv) {
    Item& d = top();
    if (d.kind != Item::Kind::value || d.value.kind != PickleValue::Kind::dict ||
        !d.value.type_tag.empty() || kv.size() % 2 != 0)
      throw damaged("the pickle sets items on something that is not a dict");
    for (size_t i = 0; i < kv.size(); i += 2) {
      require_value(kv[i], "a dict key");
      require_value(kv[i + 1], "a dict value");
      const PickleValue& key = kv[i].value;
      if (key.kind != PickleValue::Kind::string && key.kind != PickleValue::Kind::integer)
        throw damaged(std::string("a dict key that is a ") + kind_name(key.kind));
      for (const PickleValue& k : d.value.keys)
        if (k.kind == key.kind && k.string == key.string && k.integer == key.integer)
          throw damaged("the dict key \"" +
                        printable(key.kind == PickleValue::Kind::string
                                      ? key.string
                                      : std::to_string(key.integer)) +
                        "\" twice");
      nest(d, kv[i]);
      nest(d, kv[i + 1]);
      check_depth(d);
      d.value.keys.push_back(std::move(kv[i].value));
      d.value.items.push_back(std::move(kv[i + 1].value));
    }
  }
  void append(std::vector<Item> items) {
    Item& l = top();
    if (l.kind != Item::Kind::value || l.value.kind != PickleValue::Kind::list ||
        !l.value.type_tag.empty())
      throw damaged("the pickle appends to something that is not a list");
    for (Item& i : items) {
      require_value(i, "a list item");
      nest(l, i);
      check_depth(l);
      l.value.items.push_back(std::move(i.value));
    }
  }
  void memoize(uint32_t index) {
    const Item& t = top();
    charge(t.nodes);
    memo_[index] = t;
  }
  void recall(uint32_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) throw damaged("the pickle recalls a value it never stored");
    charge(it->second.nodes);
    stack_.push_back(it->second);
  }

  void push_global(const std::string& module, const std::string& name) {
    Item g;
    g.kind = Item::Kind::global;
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g.global = Global::rebuild_tensor;
    } else if (module == "torch" && storage_types().count(name)) {
      g.global = Global::storage_type;
      g.detail = name;
    } else if (module == "collections" && name == "OrderedDict") {
      g.global = Global::ordered_dict;
    } else if (module == "torch.jit._pickle" && name == "restore_type_tag") {
      g.global = Global::restore_type_tag;
    } else if (module == "torch.jit._pickle" &&
               (name == "build_intlist" || name == "build_tensorlist" ||
                name == "build_doublelist" || name == "build_boollist")) {
      g.global = Global::build_list;
      g.detail = name == "build_intlist"      ? "int"
                 : name == "build_tensorlist" ? "Tensor"
                 : name == "build_doublelist" ? "float"
                                              : "bool";
    } else {
      throw Error(where_,
                  "refused: the file asks to call " + printable(module) + "." + printable(name) +
                      " when loaded, which a kdseg checkpoint never does (nothing was run)",
                  "a kdseg checkpoint holds only tensors, numbers, strings, lists and dicts; this "
                  "file was made to run code: do not open it with torch.load either");
    }
    charge(1);
    stack_.push_back(std::move(g));
  }

  void persistent_id() {
    Item t = pop();
    auto is_string = [](const Item& i) {
      return i.kind == Item::Kind::value && i.value.kind == PickleValue::Kind::string;
    };
    if (t.kind != Item::Kind::raw_tuple || t.tuple.size() != 5 || !is_string(t.tuple[0]) ||
        t.tuple[0].value.string != "storage" || t.tuple[1].kind != Item::Kind::global ||
        t.tuple[1].global != Global::storage_type || !is_string(t.tuple[2]) ||
        !is_string(t.tuple[3]) || t.tuple[3].value.string.size() > 32 ||
        t.tuple[4].kind != Item::Kind::value || t.tuple[4].value.kind != PickleValue::Kind::integer)
      throw damaged("a tensor storage reference");
    const std::string& key = t.tuple[2].value.string;
    const StorageType type = storage_types().at(t.tuple[1].detail);
    const int64_t numel = t.tuple[4].value.integer;
    const auto rec = storages_.find(key);
    if (rec == storages_.end())
      throw damaged("tensor storage \"" + printable(key) + "\" has no record");
    if (numel < 0 || static_cast<uint64_t>(numel) > rec->second.size / type.element_size ||
        static_cast<uint64_t>(numel) * type.element_size != rec->second.size)
      throw damaged("tensor storage \"" + printable(key) + "\": its size");
    auto seen = used_.find(key);
    if (seen != used_.end()) {
      if (std::strcmp(seen->second->type.dtype, type.dtype) != 0)
        throw damaged("tensor storage \"" + printable(key) + "\" read as two types");
    } else {
      if (std::strcmp(type.dtype, "bool") == 0)
        for (uint64_t i = 0; i < rec->second.size; ++i)
          if (rec->second.data[i] > 1)
            throw damaged("a boolean tensor holding " + std::to_string(rec->second.data[i]));
      seen =
          used_.emplace(key, std::make_shared<Storage>(Storage{key, type, numel, rec->second.data}))
              .first;
    }
    Item s;
    s.kind = Item::Kind::storage;
    s.storage = seen->second;
    charge(1);
    stack_.push_back(std::move(s));
  }

  static bool int_tuple(const Item& i, std::vector<int64_t>& out) {
    if (i.kind != Item::Kind::value || i.value.kind != PickleValue::Kind::tuple) return false;
    for (const PickleValue& v : i.value.items) {
      if (v.kind != PickleValue::Kind::integer) return false;
      out.push_back(v.integer);
    }
    return true;
  }

  void reduce() {
    Item args = pop();
    Item fn = pop();
    if (fn.kind != Item::Kind::global) throw damaged("the pickle calls something not allowed");
    std::vector<Item> a;
    if (args.kind == Item::Kind::raw_tuple) {
      a = std::move(args.tuple);
    } else if (args.kind == Item::Kind::value && args.value.kind == PickleValue::Kind::tuple) {
      for (PickleValue& v : args.value.items) {
        Item i;
        i.value = std::move(v);
        a.push_back(std::move(i));
      }
    } else {
      throw damaged("a call's arguments are not a tuple");
    }
    switch (fn.global) {
      case Global::rebuild_tensor:
        return rebuild_tensor(a);
      case Global::ordered_dict:
        if (!a.empty()) throw damaged("OrderedDict with arguments");
        return push_value(container(PickleValue::Kind::dict));
      case Global::restore_type_tag: {
        if (a.size() != 2 || a[0].kind != Item::Kind::value || a[1].kind != Item::Kind::value ||
            a[1].value.kind != PickleValue::Kind::string)
          throw damaged("a type tag");
        Item v = std::move(a[0]);
        const PickleValue::Kind k = v.value.kind;
        const TypeTag tag = parse_type_tag(a[1].value.string, where_);
        if ((k != PickleValue::Kind::dict && k != PickleValue::Kind::list) ||
            !v.value.type_tag.empty() ||
            tag.name != (k == PickleValue::Kind::dict ? "Dict" : "List") || !conforms(v.value, tag))
          throw damaged("a container that does not match its type tag \"" +
                        printable(a[1].value.string) + "\"");
        v.value.type_tag = a[1].value.string;
        stack_.push_back(std::move(v));
        return;
      }
      case Global::build_list: {
        if (a.size() != 1 || a[0].kind != Item::Kind::value ||
            a[0].value.kind != PickleValue::Kind::list || !a[0].value.type_tag.empty())
          throw damaged("a typed list");
        Item v = std::move(a[0]);
        const std::string tag = "List[" + fn.detail + "]";
        if (!conforms(v.value, parse_type_tag(tag, where_)))
          throw damaged("a list whose items are not " + fn.detail);
        v.value.type_tag = tag;
        stack_.push_back(std::move(v));
        return;
      }
      case Global::storage_type:
        break;
    }
    throw damaged("the pickle calls a storage type");
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, sizes, strides, requires_grad, hooks)
  void rebuild_tensor(const std::vector<Item>& a) {
    auto t = std::make_shared<PickleTensor>();
    if (a.size() != 6 || a[0].kind != Item::Kind::storage || a[1].kind != Item::Kind::value ||
        a[1].value.kind != PickleValue::Kind::integer || !int_tuple(a[2], t->sizes) ||
        !int_tuple(a[3], t->strides) || a[4].kind != Item::Kind::value ||
        a[4].value.kind != PickleValue::Kind::boolean || a[5].kind != Item::Kind::value ||
        a[5].value.kind != PickleValue::Kind::dict || !a[5].value.items.empty())
      throw damaged("a tensor's arguments");
    const Storage& s = *a[0].storage;
    t->dtype = s.type.dtype;
    t->element_size = s.type.element_size;
    t->offset = a[1].value.integer;
    t->storage = s.key;
    t->storage_numel = s.numel;
    t->data = s.data;
    t->requires_grad = a[4].value.boolean;
    if (t->sizes.size() != t->strides.size() || t->sizes.size() > 32 || t->offset < 0)
      throw damaged("a tensor's shape");
    // numel and the last element's index, without overflow (< 2^62)
    const int64_t kLimit = int64_t{1} << 62;
    int64_t numel = 1, last = 0;
    for (size_t d = 0; d < t->sizes.size(); ++d) {
      const int64_t size = t->sizes[d], stride = t->strides[d];
      if (size < 0 || stride < 0) throw damaged("a tensor's shape");
      if (size == 0) numel = 0;
      if (numel != 0 && size > kLimit / numel) throw damaged("a tensor's shape");
      numel *= size;
      if (size > 0 && stride > 0) {
        if (stride > (kLimit - last) / size) throw damaged("a tensor's strides");
        last += (size - 1) * stride;
      }
    }
    if (numel > 0 ? (t->offset > s.numel - 1 - last) : (t->offset > s.numel))
      throw damaged("a tensor reaches past its storage \"" + printable(s.key) + "\"");
    Item it;
    it.value.kind = PickleValue::Kind::tensor;
    it.value.tensor = std::move(t);
    charge(1);
    stack_.push_back(std::move(it));
  }

  PickleValue stop() {
    if (stack_.size() != 1 || !marks_.empty() || stack_[0].kind != Item::Kind::value)
      throw damaged("the pickle stops with " + std::to_string(stack_.size()) + " values");
    if (pos_ != n_) throw damaged("bytes after the pickle's end");
    for (const auto& [key, rec] : storages_)
      if (!used_.count(key)) throw damaged("tensor storage \"" + printable(key) + "\" unused");
    return std::move(stack_[0].value);
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::map<std::string, ZipRecord>& storages_;
  const std::string& where_;
  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Item> memo_;
  std::map<std::string, std::shared_ptr<const Storage>> used_;
  size_t nodes_ = 0;
};

// --------------------------------------------------------------------------------- the digest

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>(v >> (8 * i));
}

// The encoding of a scalar or string (dict keys; everything but containers and tensors).
std::string encode_scalar(const PickleValue& v) {
  std::string out;
  switch (v.kind) {
    case PickleValue::Kind::none:
      out = "N";
      break;
    case PickleValue::Kind::boolean:
      out = v.boolean ? std::string("B\x01", 2) : std::string("B\0", 2);
      break;
    case PickleValue::Kind::integer:
      out = "I";
      put_u64(out, static_cast<uint64_t>(v.integer));
      break;
    case PickleValue::Kind::real: {
      uint64_t bits = 0;
      std::memcpy(&bits, &v.real, 8);
      out = "F";
      put_u64(out, bits);
      break;
    }
    case PickleValue::Kind::string:
      out = "S";
      put_u64(out, v.string.size());
      out += v.string;
      break;
    default:
      break;
  }
  return out;
}

// The elements of `t` in row-major order.
void hash_elements(Sha256& h, const PickleTensor& t) {
  const size_t es = t.element_size;
  const int64_t numel = t.numel();
  if (numel == 0) return;
  if (t.is_contiguous()) {
    h.update(t.data + t.offset * es, static_cast<size_t>(numel) * es);
    return;
  }
  const size_t nd = t.sizes.size();
  std::vector<int64_t> index(nd, 0);
  for (int64_t k = 0; k < numel; ++k) {
    int64_t at = t.offset;
    for (size_t d = 0; d < nd; ++d) at += index[d] * t.strides[d];
    h.update(t.data + at * es, es);
    for (size_t d = nd; d-- > 0;) {
      if (++index[d] < t.sizes[d]) break;
      index[d] = 0;
    }
  }
}

void hash_value(Sha256& h, const PickleValue& v, const char* skip_key = nullptr) {
  using K = PickleValue::Kind;
  std::string head;
  switch (v.kind) {
    case K::list:
    case K::tuple:
      head = v.kind == K::list ? "L" : "T";
      put_u64(head, v.items.size());
      h.update(head.data(), head.size());
      for (const PickleValue& i : v.items) hash_value(h, i);
      return;
    case K::dict: {
      std::vector<std::pair<std::string, size_t>> keys;
      for (size_t i = 0; i < v.keys.size(); ++i)
        if (!(skip_key && v.keys[i].kind == K::string && v.keys[i].string == skip_key))
          keys.emplace_back(encode_scalar(v.keys[i]), i);
      std::sort(keys.begin(), keys.end());
      head = "D";
      put_u64(head, keys.size());
      h.update(head.data(), head.size());
      for (const auto& [key, i] : keys) {
        h.update(key.data(), key.size());
        hash_value(h, v.items[i]);
      }
      return;
    }
    case K::tensor: {
      const PickleTensor& t = *v.tensor;
      PickleValue dtype;
      dtype.kind = K::string;
      dtype.string = t.dtype;
      head = "A" + encode_scalar(dtype);
      put_u64(head, t.sizes.size());
      for (int64_t s : t.sizes) put_u64(head, static_cast<uint64_t>(s));
      put_u64(head, static_cast<uint64_t>(t.numel()) * t.element_size);
      h.update(head.data(), head.size());
      hash_elements(h, t);
      return;
    }
    default:
      head = encode_scalar(v);
      h.update(head.data(), head.size());
  }
}

bool is_digest_text(const std::string& s) {
  return s.size() == 7 + 64 && s.compare(0, 7, "sha256:") == 0 &&
         std::all_of(s.begin() + 7, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

int64_t PickleTensor::numel() const {
  return std::accumulate(sizes.begin(), sizes.end(), int64_t{1}, std::multiplies<int64_t>());
}

bool PickleTensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    if (sizes[d] != 1 && strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

const PickleValue* PickleValue::find(const std::string& key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i].kind == Kind::string && keys[i].string == key) return &items[i];
  return nullptr;
}

const char* kind_name(PickleValue::Kind kind) {
  switch (kind) {
    case PickleValue::Kind::none:
      return "None";
    case PickleValue::Kind::boolean:
      return "bool";
    case PickleValue::Kind::integer:
      return "int";
    case PickleValue::Kind::real:
      return "float";
    case PickleValue::Kind::string:
      return "str";
    case PickleValue::Kind::list:
      return "list";
    case PickleValue::Kind::tuple:
      return "tuple";
    case PickleValue::Kind::dict:
      return "dict";
    case PickleValue::Kind::tensor:
      return "tensor";
  }
  return "?";
}

PickleArchive read_pickle_archive(std::shared_ptr<const std::vector<uint8_t>> bytes,
                                  const std::string& where) {
  const std::vector<ZipRecord> records = read_zip(bytes->data(), bytes->size(), where);
  auto damaged = [&](const std::string& what) {
    return Error(where, "damaged checkpoint (" + what + ")", kDamagedHint);
  };
  const std::string& first = records.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    throw Error(where, "not a kdseg checkpoint (zip record " + printable(first) + ")",
                kNotOursHint);
  const std::string prefix = first.substr(0, slash + 1);
  std::map<std::string, ZipRecord> storages;
  const ZipRecord* pkl = nullptr;
  bool have_version = false;
  std::map<std::string, int> seen;
  for (const ZipRecord& r : records) {
    if (r.name.compare(0, prefix.size(), prefix) != 0)
      throw damaged("zip record " + printable(r.name) + " outside " + printable(prefix));
    const std::string rest = r.name.substr(prefix.size());
    if (seen[rest]++) throw damaged("zip record " + printable(r.name) + " twice");
    const std::string text(reinterpret_cast<const char*>(r.data), std::min<uint64_t>(r.size, 64));
    if (rest == "data.pkl") {
      pkl = &r;
    } else if (rest == "version" || rest == ".data/version") {
      const size_t digits = text.find_first_not_of("0123456789");
      if (r.size > 9 || digits == 0 || (digits != std::string::npos && text.substr(digits) != "\n"))
        throw damaged("zip record " + printable(r.name));
      have_version = true;
    } else if (rest == "byteorder") {
      if (text != "little")
        throw Error(where, "checkpoint written in " + printable(text) + "-endian byte order",
                    "kdseg reads little-endian checkpoints");
    } else if (rest == ".data/serialization_id" || rest == ".format_version" ||
               rest == ".storage_alignment") {
      if (r.size > 64) throw damaged("zip record " + printable(r.name));
    } else if (rest.compare(0, 5, "data/") == 0 && rest.size() > 5 && rest.size() <= 5 + 18 &&
               rest.find_first_not_of("0123456789", 5) == std::string::npos) {
      storages[rest.substr(5)] = r;
    } else {
      throw Error(where, "not a kdseg checkpoint (zip record " + printable(r.name) + ")",
                  kNotOursHint);
    }
  }
  if (!pkl || !have_version)
    throw Error(
        where,
        std::string("not a kdseg checkpoint (no ") + (pkl ? "version" : "data.pkl") + " record)",
        kNotOursHint);
  PickleArchive archive;
  archive.root = Unpickler(*pkl, storages, where).run();
  archive.bytes = std::move(bytes);
  return archive;
}

std::string content_digest(const PickleValue& dict) {
  Sha256 h;
  hash_value(h, dict, "digest");
  return "sha256:" + h.finish_hex();
}

CheckpointFile parse_checkpoint(std::shared_ptr<const std::vector<uint8_t>> bytes,
                                const std::string& where) {
  CheckpointFile f;
  f.archive = read_pickle_archive(std::move(bytes), where);
  const PickleValue& d = f.archive.root;
  using K = PickleValue::Kind;
  if (d.kind != K::dict) throw Error(where, "not a kdseg checkpoint (not a dict)", kNotOursHint);
  for (const PickleValue& k : d.keys)
    if (k.kind != K::string)
      throw Error(where, "not a kdseg checkpoint (a key that is not a string)", kNotOursHint);
  auto get = [&](const char* key) -> const PickleValue& {
    const PickleValue* v = d.find(key);
    if (!v)
      throw Error(where, std::string("not a kdseg checkpoint (no \"") + key + "\" entry)",
                  kNotOursHint);
    return *v;
  };
  const PickleValue& format = get("format");
  if (format.kind != K::string || format.string != kCheckpointFormat)
    throw Error(where,
                std::string("not a kdseg checkpoint (format is not \"") + kCheckpointFormat + "\")",
                kNotOursHint);
  const PickleValue& version = get("version");
  if (version.kind != K::integer)
    throw Error(where, "checkpoint version is not an integer", kNotOursHint);
  f.version = version.integer;
  if (f.version < kCheckpointVersionWithoutDigest || f.version > kCheckpointVersion)
    throw Error(where,
                "checkpoint format version " + std::to_string(f.version) +
                    ", this kdseg reads version " + std::to_string(kCheckpointVersion) + " (and " +
                    std::to_string(kCheckpointVersionWithoutDigest) + ")",
                f.version > kCheckpointVersion
                    ? "it was written by a newer kdseg: use that version, or retrain"
                    : "it was written by an older kdseg: retrain, or convert it with that version");
  if (const PickleValue* digest = d.find("digest")) {
    if (digest->kind != K::string || !is_digest_text(digest->string))
      throw Error(where, "damaged checkpoint (its \"digest\" entry is not sha256:<64 hex>)",
                  kDamagedHint);
    const std::string actual = content_digest(d);
    if (actual != digest->string && kSumsMustMatch)
      throw Error(where,
                  "damaged checkpoint: its content does not match its digest (stored " +
                      digest->string + ", content " + actual + ")",
                  kDamagedHint);
    f.digest = digest->string;
  } else if (f.version >= kCheckpointVersion) {
    throw Error(where,
                "damaged checkpoint (version " + std::to_string(f.version) +
                    " without its \"digest\" entry)",
                kDamagedHint);
  } else {
    f.warnings.push_back(where + ": checkpoint version " + std::to_string(f.version) +
                         " has no digest, so damage to it cannot be detected (a checkpoint "
                         "written by this kdseg has one)");
  }
  const PickleValue& arch = get("arch");
  const PickleValue& config = get("config");
  const PickleValue& state = get("state_dict");
  if (arch.kind != K::string || config.kind != K::string || state.kind != K::dict)
    throw Error(where, "malformed checkpoint (arch and config must be strings, state_dict a dict)",
                kNotOursHint);
  for (size_t i = 0; i < state.keys.size(); ++i)
    if (state.keys[i].kind != K::string || state.items[i].kind != K::tensor)
      throw Error(where, "malformed checkpoint state_dict (needs string → tensor)", kNotOursHint);
  return f;
}

}  // namespace kdseg
