#include "kdseg/util/error.h"

namespace kdseg {

namespace {
std::string compose(const std::string& where, const std::string& what, const std::string& hint) {
  std::string s = where.empty() ? what : where + ": " + what;
  if (!hint.empty()) s += "\n  HINT: " + hint;
  return s;
}
}  // namespace

Error::Error(const std::string& where, const std::string& what, const std::string& hint)
    : std::runtime_error(compose(where, what, hint)), where_(where), problem_(what), hint_(hint) {}

}  // namespace kdseg
