// NIfTI round trips: every datatype, .nii and .nii.gz, NIfTI-1 and -2, 3D and 4D; orientation.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "kdseg/io/gzip.h"
#include "kdseg/io/nifti.h"
#include "kdseg/util/error.h"
#include "support/test_support.h"

namespace kdseg {
namespace {

using test::make_image;
using test::ScratchDir;

Volume random_volume(const std::array<int64_t, 3>& dim, int64_t n_channels, int seed,
                     bool integers) {
  Volume v = make_image<float>(dim, {1.0, 1.5, 2.5}, 0.f, n_channels);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(0, 200);
  for (auto& x : v.data) x = integers ? static_cast<float>(u(rng)) : u(rng) * 0.37f - 11.f;
  return v;
}

void expect_same_geometry(const NiftiHeader& a, const NiftiHeader& b) {
  EXPECT_EQ(a.qform_code, b.qform_code);
  EXPECT_EQ(a.sform_code, b.sform_code);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(a.pixdim[i], b.pixdim[i]) << "pixdim " << i;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(a.srow[i][j], b.srow[i][j]);
  EXPECT_FLOAT_EQ(a.quatern_b, b.quatern_b);
  EXPECT_FLOAT_EQ(a.quatern_c, b.quatern_c);
  EXPECT_FLOAT_EQ(a.quatern_d, b.quatern_d);
  EXPECT_FLOAT_EQ(a.qoffset_x, b.qoffset_x);
  EXPECT_FLOAT_EQ(a.qoffset_y, b.qoffset_y);
  EXPECT_FLOAT_EQ(a.qoffset_z, b.qoffset_z);
  EXPECT_EQ(a.xyzt_units, b.xyzt_units);
}

struct RoundTripCase {
  int32_t datatype;
  const char* ext;
  int version;
};

class NiftiRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(NiftiRoundTrip, VoxelsAndGeometrySurvive) {
  const auto p = GetParam();
  ScratchDir dir("roundtrip");
  const bool integers = p.datatype != kNiftiFloat32 && p.datatype != kNiftiFloat64;
  Volume v = random_volume({7, 5, 3}, 1, p.datatype, integers);
  WriteOptions o;
  o.datatype = p.datatype;
  o.version = p.version;
  const std::string path = dir.str(std::string("img") + p.ext);
  write_volume(path, v, o);
  Volume r = read_volume(path);
  EXPECT_EQ(r.source.version, p.version);
  EXPECT_EQ(r.source.datatype, p.datatype);
  ASSERT_EQ(r.dim, v.dim);
  EXPECT_EQ(r.spacing, v.spacing);
  ASSERT_EQ(r.data.size(), v.data.size());
  for (size_t i = 0; i < v.data.size(); ++i) ASSERT_FLOAT_EQ(r.data[i], v.data[i]) << i;
  expect_same_geometry(r.source, v.source);
  EXPECT_TRUE(same_grid(r, v));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, NiftiRoundTrip,
                         ::testing::Values(RoundTripCase{kNiftiUInt8, ".nii", 1},
                                           RoundTripCase{kNiftiInt16, ".nii.gz", 1},
                                           RoundTripCase{kNiftiInt32, ".nii", 2},
                                           RoundTripCase{kNiftiFloat32, ".nii.gz", 2},
                                           RoundTripCase{kNiftiFloat64, ".nii", 1},
                                           RoundTripCase{kNiftiUInt8, ".nii.gz", 2},
                                           RoundTripCase{kNiftiInt16, ".nii", 2},
                                           RoundTripCase{kNiftiFloat64, ".nii.gz", 2},
                                           RoundTripCase{kNiftiInt32, ".nii.gz", 1},
                                           RoundTripCase{kNiftiFloat32, ".nii", 1}));

TEST(NiftiIo, FourDimensionalRoundTrip) {
  ScratchDir dir("4d");
  Volume v = random_volume({6, 4, 3}, 4, 7, false);
  write_volume(dir.str("x.nii.gz"), v);
  Volume r = read_volume(dir.str("x.nii.gz"));
  EXPECT_EQ(r.n_channels, 4);
  EXPECT_EQ(r.source.dim[0], 4);
  EXPECT_EQ(r.data, v.data);
}

TEST(NiftiIo, ScaleSlopeAndInterceptApplied) {
  ScratchDir dir("scl");
  Volume v = make_image<float>({4, 4, 4}, {1, 1, 1}, 0.f);
  for (size_t i = 0; i < v.data.size(); ++i) v.data[i] = 10.f + 0.5f * static_cast<float>(i);
  WriteOptions o;
  o.datatype = kNiftiInt16;
  o.scl_slope = 0.5;
  o.scl_inter = 10;
  write_volume(dir.str("s.nii"), v, o);
  NiftiFile raw = read_nifti_file(dir.str("s.nii"));
  EXPECT_DOUBLE_EQ(raw.header.scl_slope, 0.5);
  // Stored values are (value - 10) / 0.5 = i, in file order.
  const int16_t* stored = reinterpret_cast<const int16_t*>(raw.voxels());
  int16_t mx = 0;
  for (size_t i = 0; i < v.data.size(); ++i) mx = std::max(mx, stored[i]);
  EXPECT_EQ(mx, 63);
  Volume r = read_volume(dir.str("s.nii"));
  EXPECT_EQ(r.data, v.data);
}

TEST(NiftiIo, LabelsRoundTripAsUint8) {
  ScratchDir dir("labels");
  LabelMap l = make_image<uint8_t>({5, 5, 5}, {1, 1, 1}, 0);
  l.at(1, 2, 3) = 4;
  l.at(0, 0, 0) = 2;
  write_labels(dir.str("seg.nii.gz"), l);
  LabelMap r = read_labels(dir.str("seg.nii.gz"));
  EXPECT_EQ(r.source.datatype, kNiftiUInt8);
  EXPECT_EQ(r.data, l.data);
  EXPECT_EQ(r.at(1, 2, 3), 4);
}

TEST(Orientation, LpsFileIsFlippedToRasAndBack) {
  // A BraTS-like LPS file: file voxel (0,0,0) is the subject's left-posterior corner, which in RAS
  // order is canonical (nx-1, ny-1, 0).
  ScratchDir dir("lps");
  NiftiHeader h;
  Mat44 lps{};
  lps[0] = {-1, 0, 0, 0};
  lps[1] = {0, -1, 0, 9};
  lps[2] = {0, 0, 1, 0};
  lps[3] = {0, 0, 0, 1};
  h = make_header({4, 3, 2}, lps, 1, kNiftiUInt8);
  std::vector<uint8_t> file_voxels(24, 0);
  file_voxels[0] = 7;  // file (0,0,0)
  file_voxels[1] = 9;  // file (1,0,0)
  auto bytes = encode_nifti(h, file_voxels.data(), file_voxels.size());
  write_file_atomic(dir.str("lps.nii"), bytes.data(), bytes.size());
  LabelMap m = read_labels(dir.str("lps.nii"));
  EXPECT_EQ(axis_codes(affine(m.source)), "LPS");
  EXPECT_EQ(m.at(3, 2, 0), 7);
  EXPECT_EQ(m.at(2, 2, 0), 9);
  // Written back, the file has its original voxel order and header.
  write_labels(dir.str("back.nii"), m);
  NiftiFile back = read_nifti_file(dir.str("back.nii"));
  EXPECT_EQ(std::vector<uint8_t>(back.voxels(), back.voxels() + back.voxel_bytes()), file_voxels);
  expect_same_geometry(back.header, h);
}

TEST(Orientation, PermutedAxesAreReordered) {
  // File axis 0 runs along world y (anterior), axis 1 along -x (left), axis 2 along z.
  Mat44 m{};
  m[0] = {0, -2, 0, 0};
  m[1] = {1, 0, 0, 0};
  m[2] = {0, 0, 3, 0};
  m[3] = {0, 0, 0, 1};
  AxisMap map = axis_map_to_ras(m);
  EXPECT_EQ(map.perm[0], 1);
  EXPECT_TRUE(map.flip[0]);
  EXPECT_EQ(map.perm[1], 0);
  EXPECT_FALSE(map.flip[1]);
  EXPECT_EQ(map.perm[2], 2);
  EXPECT_EQ(axis_codes(m), "ALS");
  // Round trip through to/from canonical restores every voxel.
  std::vector<float> in(4 * 3 * 2);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  std::vector<float> canon(in.size()), back(in.size());
  std::array<int64_t, 3> cdim, fdim;
  to_canonical(in.data(), {4, 3, 2}, 1, map, canon.data(), cdim);
  EXPECT_EQ(cdim, (std::array<int64_t, 3>{3, 4, 2}));
  // canonical (x=0: most left = file axis1 index 2, y=0 file axis0 index 0)
  EXPECT_EQ(canon[0], in[0 + 4 * 2]);
  from_canonical(canon.data(), cdim, 1, map, back.data(), fdim);
  EXPECT_EQ(back, in);
}

TEST(Orientation, QuaternionRoundTripsRotationsAndReflections) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  for (int trial = 0; trial < 20; ++trial) {
    // Random rotation from a random unit quaternion, scaled, maybe reflected.
    double a = u(rng), b = u(rng), c = u(rng), d = u(rng);
    double n = std::sqrt(a * a + b * b + c * c + d * d);
    a /= n, b /= n, c /= n, d /= n;
    double r[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c}};
    double s[3] = {0.9, 1.2, 2.0};
    double flip = trial % 2 ? -1 : 1;
    Mat44 m{};
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) m[i][j] = r[i][j] * s[j] * (j == 2 ? flip : 1);
      m[i][3] = 10.0 * (i + 1);
    }
    m[3] = {0, 0, 0, 1};
    NiftiHeader h;
    set_affine(h, m, 1);
    Mat44 q = qform_matrix(h);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) EXPECT_NEAR(q[i][j], m[i][j], 1e-6) << trial;
  }
}

TEST(NiftiIo, HeaderOnlyReadDoesNotNeedVoxels) {
  ScratchDir dir("hdr");
  Volume v = random_volume({9, 8, 7}, 1, 1, true);
  write_volume(dir.str("h.nii.gz"), v);
  NiftiHeader h = read_nifti_header(dir.str("h.nii.gz"));
  EXPECT_EQ(h.dim[1], 9);
  EXPECT_EQ(h.dim[3], 7);
}

TEST(Gzip, MultiMemberStreamsAreConcatenated) {
  std::vector<uint8_t> a(1000, 1), b(3000, 2);
  auto ga = gzip(a.data(), a.size()), gb = gzip(b.data(), b.size());
  std::vector<uint8_t> both(ga);
  both.insert(both.end(), gb.begin(), gb.end());
  for (Inflater inf : {Inflater::libdeflate, Inflater::zlib}) {
    auto out = gunzip(both.data(), both.size(), "multi", inf);
    ASSERT_EQ(out.size(), 4000u);
    EXPECT_EQ(out[999], 1);
    EXPECT_EQ(out[1000], 2);
  }
}

TEST(Gzip, OutputBoundIsEnforced) {
  std::vector<uint8_t> zeros(1 << 20, 0);
  auto gz = gzip(zeros.data(), zeros.size(), 6);
  EXPECT_THROW(gunzip(gz.data(), gz.size(), "bomb", Inflater::libdeflate, 1000), Error);
  EXPECT_THROW(gunzip(gz.data(), gz.size(), "bomb", Inflater::zlib, 1000), Error);
}

TEST(NiftiIo, WritesAreAtomic) {
  ScratchDir dir("atomic");
  Volume v = random_volume({4, 4, 4}, 1, 2, true);
  write_volume(dir.str("a.nii.gz"), v);
  // No temporary file is left beside the output.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1);
  // A write to an impossible place fails loudly.
  EXPECT_THROW(write_volume("/proc/kdseg_cannot_write/x.nii.gz", v), Error);
}

TEST(NiftiIo, ThreadsWritingOneFileEachLandWhole) {
  // The preprocessing cache's threads write the same plan.json when a plan's first cases are built
  // together: every write succeeds, the file is one of them whole, no temporary file is left.
  // (With one temporary name per process, a thread's rename found its file already renamed.)
  ScratchDir dir("atomic_threads");
  const std::string path = dir.str("plan.json");
  constexpr int kThreads = 8, kRounds = 40;
  std::vector<std::vector<uint8_t>> payloads;
  for (int t = 0; t < kThreads; ++t)
    payloads.emplace_back(static_cast<size_t>(4096 + 97 * t), static_cast<uint8_t>('a' + t));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        try {
          write_file_atomic(path, payloads[t].data(), payloads[t].size());
        } catch (const Error&) {
          ++failures;
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  const std::vector<uint8_t> got = read_file(path);
  EXPECT_NE(std::find(payloads.begin(), payloads.end(), got), payloads.end())
      << "a mix of writes: " << got.size() << " bytes";
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename(), "plan.json");
    ++n;
  }
  EXPECT_EQ(n, 1);
}

TEST(NiftiIo, WritesAreSyncedBeforeAndAfterTheRename) {
  // The file's bytes are fsynced before the rename and its folder after it: two calls per
  // write (a power loss leaves the old file or the whole new one); a link is one (the folder).
  ScratchDir dir("durable");
  Volume v = random_volume({4, 4, 4}, 1, 2, true);
  uint64_t before = durable_sync_count();
  write_volume(dir.str("a.nii.gz"), v);
  EXPECT_EQ(durable_sync_count() - before, 2u);
  before = durable_sync_count();
  link_or_copy(dir.str("a.nii.gz"), dir.str("b.nii.gz"));
  EXPECT_EQ(durable_sync_count() - before, 1u);
  EXPECT_EQ(read_volume(dir.str("b.nii.gz")).data, read_volume(dir.str("a.nii.gz")).data);
}

TEST(NiftiIo, LinkingAgainLeavesNoTemporaryFile) {
  // A rerun links the same file again (reproduce's oracle data): rename(2) of a hard link onto
  // another link of the same file does nothing, so the temporary name must go another way.
  ScratchDir dir("relink");
  write_volume(dir.str("a.nii.gz"), random_volume({4, 4, 4}, 1, 2, true));
  link_or_copy(dir.str("a.nii.gz"), dir.str("b.nii.gz"));
  link_or_copy(dir.str("a.nii.gz"), dir.str("b.nii.gz"));
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a.nii.gz", "b.nii.gz"}));
}

}  // namespace
}  // namespace kdseg
