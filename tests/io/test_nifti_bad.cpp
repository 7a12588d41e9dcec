// Every kind of bad NIfTI input gets a kdseg::Error naming the file and the problem; none crashes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::make_image;
using test::ScratchDir;

// Expects `fn` to throw a kdseg::Error whose message names `path` and contains `phrase`.
template <class Fn>
void expect_error(Fn fn, const std::string& path, const std::string& phrase) {
  try {
    fn();
    FAIL() << "no error for " << path << " (expected \"" << phrase << "\")";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
  }
}

std::vector<uint8_t> good_nii(int version = 1) {
  Volume v = make_image<float>({8, 8, 8}, {1, 1, 1}, 3.f);
  NiftiHeader h = v.source;
  h.version = version;
  return encode_nifti(h, v.data.data(), v.data.size() * 4);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  write_file_atomic(path, b.data(), b.size());
}

class BadNifti : public ::testing::Test {
 protected:
  ScratchDir dir{"bad"};
};

TEST_F(BadNifti, MissingFile) {
  std::string p = dir.str("nope.nii.gz");
  expect_error([&] { read_volume(p); }, p, "no such file");
}

TEST_F(BadNifti, EmptyFile) {
  std::string p = dir.str("empty.nii");
  write_bytes(p, {});
  expect_error([&] { read_volume(p); }, p, "too short");
}

TEST_F(BadNifti, TruncatedGzip) {
  auto nii = good_nii();
  auto gz = gzip(nii.data(), nii.size());
  gz.resize(gz.size() / 2);
  std::string p = dir.str("trunc.nii.gz");
  write_bytes(p, gz);
  expect_error([&] { read_volume(p); }, p, "gzip");
}

TEST_F(BadNifti, CorruptGzip) {
  auto nii = good_nii();
  for (size_t i = 0; i < nii.size(); ++i) nii[i] ^= static_cast<uint8_t>(i * 31);  // incompressible
  auto gz = gzip(nii.data(), nii.size());
  for (size_t i = gz.size() / 2; i < gz.size() / 2 + 16; ++i) gz[i] ^= 0x5a;
  std::string p = dir.str("corrupt.nii.gz");
  write_bytes(p, gz);
  expect_error([&] { read_volume(p); }, p, "");
}

TEST_F(BadNifti, CorruptGzipCrc) {
  auto nii = good_nii();
  auto gz = gzip(nii.data(), nii.size());
  gz[gz.size() - 6] ^= 0xff;  // CRC32 in the trailer
  std::string p = dir.str("crc.nii.gz");
  write_bytes(p, gz);
  expect_error([&] { read_volume(p); }, p, "corrupt");
}

TEST_F(BadNifti, WrongMagic) {
  auto nii = good_nii();
  std::memcpy(nii.data() + 344, "xyz\0", 4);
  std::string p = dir.str("magic.nii");
  write_bytes(p, nii);
  expect_error([&] { read_volume(p); }, p, "magic");
}

TEST_F(BadNifti, NotNiftiAtAll) {
  std::string text = "this is a text file, not an image\n";
  std::vector<uint8_t> b(text.begin(), text.end());
  b.resize(600, ' ');
  std::string p = dir.str("text.nii");
  write_bytes(p, b);
  expect_error([&] { read_volume(p); }, p, "not a NIfTI file");
}

TEST_F(BadNifti, TruncatedVoxels) {
  auto nii = good_nii();
  nii.resize(nii.size() - 100);
  std::string p = dir.str("short.nii");
  write_bytes(p, nii);
  expect_error([&] { read_volume(p); }, p, "truncated");
}

TEST_F(BadNifti, DimsThatNeedMoreMemoryThanExists) {
  // NIfTI-1: 32767^4 float64 voxels = 9.2e18 bytes.
  auto nii = good_nii(1);
  for (int i = 1; i <= 4; ++i) {
    int16_t d = 32767;
    std::memcpy(nii.data() + 40 + 2 * i, &d, 2);
  }
  int16_t dim0 = 4, dt = kNiftiFloat64;
  std::memcpy(nii.data() + 40, &dim0, 2);
  std::memcpy(nii.data() + 70, &dt, 2);
  std::string p = dir.str("huge.nii.gz");
  auto gz = gzip(nii.data(), nii.size());
  write_bytes(p, gz);
  expect_error([&] { read_volume(p); }, p, "more memory than");
}

TEST_F(BadNifti, DimsThatOverflow) {
  // NIfTI-2: 2^62 x 2^62 voxels overflow 64 bits.
  auto nii = good_nii(2);
  int64_t big = int64_t{1} << 62;
  std::memcpy(nii.data() + 16 + 8, &big, 8);
  std::memcpy(nii.data() + 16 + 16, &big, 8);
  std::string p = dir.str("overflow.nii");
  write_bytes(p, nii);
  expect_error([&] { read_volume(p); }, p, "overflow");
}

TEST_F(BadNifti, NegativeDim) {
  auto nii = good_nii(1);
  int16_t d = -5;
  std::memcpy(nii.data() + 42, &d, 2);
  std::string p = dir.str("neg.nii");
  write_bytes(p, nii);
  expect_error([&] { read_volume(p); }, p, "invalid dim[1]");
}

TEST_F(BadNifti, UnsupportedDatatype) {
  auto nii = good_nii(1);
  int16_t dt = 32;  // complex64
  std::memcpy(nii.data() + 70, &dt, 2);
  std::string p = dir.str("complex.nii");
  write_bytes(p, nii);
  expect_error([&] { read_volume(p); }, p, "unsupported datatype complex64");
}

TEST_F(BadNifti, NanAndInfVoxels) {
  Volume v = make_image<float>({4, 4, 4}, {1, 1, 1}, 1.f);
  v.data[5] = std::numeric_limits<float>::quiet_NaN();
  v.data[9] = std::numeric_limits<float>::infinity();
  std::string p = dir.str("nan.nii.gz");
  write_volume(p, v);
  expect_error([&] { read_volume(p); }, p, "2 voxel(s) are NaN or Inf");
  EXPECT_NO_THROW(read_volume(p, /*allow_nonfinite=*/true));
}

TEST_F(BadNifti, NonIntegerLabels) {
  Volume v = make_image<float>({4, 4, 4}, {1, 1, 1}, 0.f);
  v.data[3] = 0.5f;
  std::string p = dir.str("prob.nii.gz");
  write_volume(p, v);
  expect_error([&] { read_labels(p); }, p, "not a label map");
}

TEST_F(BadNifti, FolderInsteadOfFile) {
  std::string p = dir.str();
  expect_error([&] { read_volume(p); }, p, "folder");
}

TEST_F(BadNifti, GzipThatInflatesBeyondTheHeader) {
  // A valid header followed by far more data than it declares: the inflate is bounded.
  auto nii = good_nii(1);
  nii.resize(nii.size() + (8 << 20), 0);
  auto gz = gzip(nii.data(), nii.size());
  std::string p = dir.str("extra.nii.gz");
  write_bytes(p, gz);
  expect_error([&] { read_volume(p); }, p, "inflates to more than");
}

}  // namespace
}  // namespace kdseg
