#pragma once
// Strict JSON <-> options-struct helpers for the model configurations stored in checkpoints and
// given on the command line. A key the struct does not know is an error (a typo must not silently
// fall back to a default), and a missing key keeps the struct's default. LibTorch-free.
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "kdseg/util/error.h"

namespace kdseg {

class JsonOptionsReader {
 public:
  // where: what is being read, for error messages, e.g. "student options"
  JsonOptionsReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object() && !j_.is_null())
      throw Error(where_, "expected a JSON object, got " + j_.dump());
  }

  // Reads j[key] into value when present; leaves the default otherwise.
  template <class T>
  void get(const char* key, T& value) {
    seen_.insert(key);
    if (j_.is_null() || !j_.contains(key)) return;
    try {
      value = j_.at(key).get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(where_, std::string("bad value for \"") + key + "\": " + j_.at(key).dump(),
                  e.what());
    }
  }

  // Throws naming every key that no get() asked for.
  void finish() const {
    if (j_.is_null()) return;
    std::string unknown;
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key())) unknown += (unknown.empty() ? "" : ", ") + it.key();
    if (!unknown.empty()) {
      std::string known;
      for (const auto& k : seen_) known += (known.empty() ? "" : ", ") + k;
      throw Error(where_, "unknown option(s): " + unknown, "known options: " + known);
    }
  }

 private:
  const nlohmann::json& j_;
  std::string where_;
  std::set<std::string> seen_;
};

}  // namespace kdseg
