#pragma once
// kdseg::Error — the one exception type of the project. Every message names the thing that was
// wrong (a file, a flag, a value) and, where one exists, a HINT line saying what would fix it.
#include <stdexcept>
#include <string>

namespace kdseg {

class Error : public std::runtime_error {
 public:
  // where: the file or flag at fault, e.g. "BraTS_001/BraTS_001_t1.nii.gz"
  // what:  the problem, e.g. "truncated gzip stream"
  // hint:  how to fix it, e.g. "re-download or re-export the file"; may be empty
  Error(const std::string& where, const std::string& what, const std::string& hint = "");

  const std::string& where() const { return where_; }
  const std::string& problem() const { return problem_; }
  const std::string& hint() const { return hint_; }

 private:
  std::string where_, problem_, hint_;
};

}  // namespace kdseg
