#include "kdseg/io/nifti.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "kdseg/io/gzip.h"
#include "kdseg/util/error.h"

namespace kdseg {

namespace {

constexpr size_t kN1HeaderSize = 348;
constexpr size_t kN2HeaderSize = 540;

// ------------------------------------------------------------------ byte-level reading
struct Reader {
  const uint8_t* p;
  bool swap;
  template <class T>
  T get(size_t off) const {
    T v;
    std::memcpy(&v, p + off, sizeof(T));
    if (swap) {
      uint8_t* b = reinterpret_cast<uint8_t*>(&v);
      std::reverse(b, b + sizeof(T));
    }
    return v;
  }
  std::string str(size_t off, size_t n) const {
    const char* s = reinterpret_cast<const char*>(p + off);
    return std::string(s, strnlen(s, n));
  }
};

struct Writer {
  std::vector<uint8_t>& buf;
  template <class T>
  void put(size_t off, T v) {
    std::memcpy(buf.data() + off, &v, sizeof(T));
  }
  void str(size_t off, const std::string& s, size_t n) {
    std::memcpy(buf.data() + off, s.data(), std::min(s.size(), n - 1));
  }
};

int32_t sizeof_hdr(const uint8_t* b, bool swap) {
  return Reader{b, swap}.get<int32_t>(0);
}

NiftiHeader parse_v1(const Reader& r) {
  NiftiHeader h;
  h.version = 1;
  h.dim_info = r.get<uint8_t>(39);
  for (int i = 0; i < 8; ++i) h.dim[i] = r.get<int16_t>(40 + 2 * i);
  h.intent_p1 = r.get<float>(56);
  h.intent_p2 = r.get<float>(60);
  h.intent_p3 = r.get<float>(64);
  h.intent_code = r.get<int16_t>(68);
  h.datatype = r.get<int16_t>(70);
  h.bitpix = r.get<int16_t>(72);
  h.slice_start = r.get<int16_t>(74);
  for (int i = 0; i < 8; ++i) h.pixdim[i] = r.get<float>(76 + 4 * i);
  const float vox_offset = r.get<float>(108);
  // A NaN, negative or absurd offset is left for validation (cast only what fits an int64).
  h.vox_offset = std::isfinite(vox_offset) && vox_offset >= 0 && vox_offset < 9e18f
                     ? static_cast<int64_t>(vox_offset)
                     : -1;
  h.scl_slope = r.get<float>(112);
  h.scl_inter = r.get<float>(116);
  h.slice_end = r.get<int16_t>(120);
  h.slice_code = r.get<uint8_t>(122);
  h.xyzt_units = r.get<uint8_t>(123);
  h.cal_max = r.get<float>(124);
  h.cal_min = r.get<float>(128);
  h.slice_duration = r.get<float>(132);
  h.toffset = r.get<float>(136);
  h.descrip = r.str(148, 80);
  h.aux_file = r.str(228, 24);
  h.qform_code = r.get<int16_t>(252);
  h.sform_code = r.get<int16_t>(254);
  h.quatern_b = r.get<float>(256);
  h.quatern_c = r.get<float>(260);
  h.quatern_d = r.get<float>(264);
  h.qoffset_x = r.get<float>(268);
  h.qoffset_y = r.get<float>(272);
  h.qoffset_z = r.get<float>(276);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) h.srow[i][j] = r.get<float>(280 + 16 * i + 4 * j);
  h.intent_name = r.str(328, 16);
  return h;
}

NiftiHeader parse_v2(const Reader& r) {
  NiftiHeader h;
  h.version = 2;
  h.datatype = r.get<int16_t>(12);
  h.bitpix = r.get<int16_t>(14);
  for (int i = 0; i < 8; ++i) h.dim[i] = r.get<int64_t>(16 + 8 * i);
  h.intent_p1 = r.get<double>(80);
  h.intent_p2 = r.get<double>(88);
  h.intent_p3 = r.get<double>(96);
  for (int i = 0; i < 8; ++i) h.pixdim[i] = r.get<double>(104 + 8 * i);
  h.vox_offset = r.get<int64_t>(168);
  h.scl_slope = r.get<double>(176);
  h.scl_inter = r.get<double>(184);
  h.cal_max = r.get<double>(192);
  h.cal_min = r.get<double>(200);
  h.slice_duration = r.get<double>(208);
  h.toffset = r.get<double>(216);
  h.slice_start = r.get<int64_t>(224);
  h.slice_end = r.get<int64_t>(232);
  h.descrip = r.str(240, 80);
  h.aux_file = r.str(320, 24);
  h.qform_code = r.get<int32_t>(344);
  h.sform_code = r.get<int32_t>(348);
  h.quatern_b = r.get<double>(352);
  h.quatern_c = r.get<double>(360);
  h.quatern_d = r.get<double>(368);
  h.qoffset_x = r.get<double>(376);
  h.qoffset_y = r.get<double>(384);
  h.qoffset_z = r.get<double>(392);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) h.srow[i][j] = r.get<double>(400 + 32 * i + 8 * j);
  h.slice_code = r.get<int32_t>(496);
  h.xyzt_units = r.get<int32_t>(500);
  h.intent_code = r.get<int32_t>(504);
  h.intent_name = r.str(508, 16);
  h.dim_info = r.get<uint8_t>(524);
  return h;
}

std::string dims_text(const NiftiHeader& h) {
  std::string s;
  for (int64_t i = 1; i <= std::clamp<int64_t>(h.dim[0], 1, 7); ++i)
    s += (i > 1 ? "x" : "") + std::to_string(h.dim[i]);
  return s;
}

// Parses and validates a header; returns the number of voxel bytes it needs.
NiftiHeader parse_header(const uint8_t* bytes, size_t size, const std::string& where,
                         uint64_t* voxel_bytes) {
  if (size < 4)
    throw Error(where,
                "file is empty or too short to be NIfTI (" + std::to_string(size) + " bytes)");
  bool swap = false;
  int32_t n = sizeof_hdr(bytes, false);
  if (n != 348 && n != 540) {
    int32_t ns = sizeof_hdr(bytes, true);
    if (ns == 348 || ns == 540) swap = true, n = ns;
  }
  if (n != 348 && n != 540)
    throw Error(where,
                "not a NIfTI file (sizeof_hdr is " + std::to_string(n) +
                    ", expected 348 for NIfTI-1 or 540 for NIfTI-2)",
                "kdseg reads NIfTI-1/2 .nii or .nii.gz; convert DICOM, MHA or NRRD first "
                "(e.g. with dcm2niix or SimpleITK)");
  const size_t hsize = n == 348 ? kN1HeaderSize : kN2HeaderSize;
  if (size < hsize)
    throw Error(where, "truncated header: " + std::to_string(size) + " of " +
                           std::to_string(hsize) + " bytes");
  Reader r{bytes, swap};
  NiftiHeader h;
  if (n == 348) {
    std::string magic(reinterpret_cast<const char*>(bytes + 344), 4);
    if (magic == std::string("ni1\0", 4))
      throw Error(where, "is the header of a .hdr/.img pair", "save the image as a single .nii");
    if (magic != std::string("n+1\0", 4))
      throw Error(where, "wrong NIfTI-1 magic (expected \"n+1\")",
                  "an Analyze 7.5 file is not supported; save it as NIfTI");
    h = parse_v1(r);
  } else {
    if (std::memcmp(bytes + 4, "n+2\0\r\n\032\n", 8) != 0) {
      if (std::memcmp(bytes + 4, "ni2\0", 4) == 0)
        throw Error(where, "is the header of a .hdr/.img pair", "save the image as a single .nii");
      throw Error(where, "wrong NIfTI-2 magic (expected \"n+2\")");
    }
    h = parse_v2(r);
  }
  h.swapped = swap;
  // Dimensions: rank 1..7, every used dim >= 1, at most 4 used dims > 1.
  if (h.dim[0] < 1 || h.dim[0] > 7)
    throw Error(where, "invalid dim[0] = " + std::to_string(h.dim[0]) + " (rank must be 1..7)");
  for (int i = h.dim[0] + 1; i < 8; ++i) h.dim[i] = 1;
  for (int i = 1; i <= h.dim[0]; ++i)
    if (h.dim[i] < 1)
      throw Error(where, "invalid dim[" + std::to_string(i) + "] = " + std::to_string(h.dim[i]));
  for (int i = 5; i <= h.dim[0]; ++i)
    if (h.dim[i] > 1)
      throw Error(where, "has " + std::to_string(h.dim[0]) + " dimensions (" + dims_text(h) +
                             "); kdseg reads 3D volumes and 4D stacks of volumes");
  const int bpv = bytes_per_voxel(h.datatype);
  if (bpv == 0)
    throw Error(where,
                std::string("unsupported datatype ") + datatype_name(h.datatype) + " (code " +
                    std::to_string(h.datatype) + ")",
                "supported: uint8, int8, int16, uint16, int32, uint32, float32, float64");
  uint64_t nvox = 1;
  for (int i = 1; i <= 4; ++i)
    if (__builtin_mul_overflow(nvox, static_cast<uint64_t>(h.dim[i]), &nvox))
      throw Error(where, "dimensions " + dims_text(h) + " overflow a 64-bit voxel count");
  // The float32 copy kdseg makes is bounded by 1 TiB; that also keeps nvox * bpv from overflowing.
  uint64_t float_bytes;
  if (__builtin_mul_overflow(nvox, uint64_t{4}, &float_bytes) || float_bytes > (uint64_t{1} << 40))
    throw Error(where, "dimensions " + dims_text(h) + " would need more memory than exists",
                "the header is corrupt");
  const uint64_t nbytes = nvox * static_cast<uint64_t>(bpv);
  const int64_t min_offset = static_cast<int64_t>(hsize);
  if (h.vox_offset < 0) throw Error(where, "vox_offset is negative or not a number");
  if (h.vox_offset < min_offset) {
    // Some writers leave vox_offset 0 in single files; the voxels then follow the 4 extension
    // bytes.
    if (h.vox_offset == 0)
      h.vox_offset = min_offset + 4;
    else
      throw Error(where, "vox_offset " + std::to_string(h.vox_offset) + " lies inside the header");
  }
  for (int i = 0; i <= 3; ++i)
    if (!std::isfinite(h.pixdim[i]))
      throw Error(where, "pixdim[" + std::to_string(i) + "] is not a finite number");
  if (h.sform_code > 0)
    for (const auto& row : h.srow)
      for (double v : row)
        if (!std::isfinite(v))
          throw Error(where, "the sform (srow_x/y/z) holds a value that is not a finite number",
                      "set sform_code to 0 or repair the affine");
  if (h.qform_code > 0)
    for (double v : {h.quatern_b, h.quatern_c, h.quatern_d, h.qoffset_x, h.qoffset_y, h.qoffset_z})
      if (!std::isfinite(v))
        throw Error(where,
                    "the qform (quatern_*/qoffset_*) holds a value that is not a finite number",
                    "set qform_code to 0 or repair the affine");
  *voxel_bytes = nbytes;
  return h;
}

// Physical memory, to refuse files whose voxels could never be held.
uint64_t physical_memory() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : uint64_t{1} << 40;
}

void check_fits_memory(const NiftiHeader& h, uint64_t voxel_bytes, const std::string& where) {
  // The float32 copy kdseg makes is what must fit.
  uint64_t need = voxel_bytes / static_cast<uint64_t>(bytes_per_voxel(h.datatype)) * 4;
  if (need > physical_memory())
    throw Error(where,
                "dimensions " + dims_text(h) + " would need " + std::to_string(need >> 20) +
                    " MiB, more memory than this machine has",
                "the header is corrupt, or the image is far larger than an MRI volume");
}

// Converts stored voxels to T (scaled, byte-swapped as needed) and reorders them into canonical
// order in one pass, straight into the output image (no intermediate buffer).
template <class S, class T>
void convert_reorient(const NiftiFile& f, const AxisMap& map, T* out) {
  const NiftiHeader& h = f.header;
  const bool swap = h.swapped && sizeof(S) > 1;
  const double slope = h.scl_slope, inter = h.scl_inter;
  const bool scaled = slope != 0 && std::isfinite(slope) && !(slope == 1 && inter == 0);
  const int64_t fd[3] = {h.dim[1], h.dim[2], h.dim[3]};
  const int64_t n = fd[0] * fd[1] * fd[2];
  const int64_t stride[3] = {1, fd[0], fd[0] * fd[1]};
  int64_t cd[3], step[3], start = 0;
  for (int a = 0; a < 3; ++a) {
    cd[a] = fd[map.perm[a]];
    step[a] = map.flip[a] ? -stride[map.perm[a]] : stride[map.perm[a]];
    if (map.flip[a]) start += (cd[a] - 1) * stride[map.perm[a]];
  }
  const uint8_t* src = f.voxels();
  auto load = [&](int64_t i) {
    S v;
    std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(S)), sizeof(S));
    if (swap) {
      uint8_t* b = reinterpret_cast<uint8_t*>(&v);
      std::reverse(b, b + sizeof(S));
    }
    return scaled ? static_cast<T>(static_cast<double>(v) * slope + inter) : static_cast<T>(v);
  };
  int64_t o = 0;
  for (int64_t ch = 0; ch < h.dim[4]; ++ch)
    for (int64_t z = 0; z < cd[2]; ++z)
      for (int64_t y = 0; y < cd[1]; ++y) {
        int64_t i = ch * n + start + z * step[2] + y * step[1];
        for (int64_t x = 0; x < cd[0]; ++x, i += step[0]) out[o++] = load(i);
      }
}

template <class T>
void convert_any(const NiftiFile& f, const AxisMap& map, T* out) {
  switch (f.header.datatype) {
    case kNiftiUInt8:
      return convert_reorient<uint8_t>(f, map, out);
    case kNiftiInt8:
      return convert_reorient<int8_t>(f, map, out);
    case kNiftiInt16:
      return convert_reorient<int16_t>(f, map, out);
    case kNiftiUInt16:
      return convert_reorient<uint16_t>(f, map, out);
    case kNiftiInt32:
      return convert_reorient<int32_t>(f, map, out);
    case kNiftiUInt32:
      return convert_reorient<uint32_t>(f, map, out);
    case kNiftiFloat32:
      return convert_reorient<float>(f, map, out);
    case kNiftiFloat64:
      return convert_reorient<double>(f, map, out);
    default:
      throw Error("", "unsupported datatype");
  }
}

// The image's shape and geometry, in canonical order, without voxels.
template <class T>
Image<T> canonical_frame(const NiftiHeader& h) {
  Image<T> img;
  img.source = h;
  img.n_channels = h.dim[4];
  // Voxel sizes from the matrix that also orients the image (sform, else qform, else pixdim),
  // so that distances and volumes agree with the geometry used; pixdim where the matrix has a
  // degenerate column. `kdseg check` reports a pixdim that disagrees.
  const Mat44 m = affine(h);
  img.to_canonical = axis_map_to_ras(m);
  const std::array<double, 3> from_matrix = affine_spacing(m);
  for (int a = 0; a < 3; ++a) {
    const int j = img.to_canonical.perm[a];
    img.dim[a] = h.dim[j + 1];
    const double s =
        from_matrix[j] > 0 && std::isfinite(from_matrix[j]) ? from_matrix[j] : h.pixdim[j + 1];
    img.spacing[a] = s > 0 ? s : 1.0;
  }
  return img;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

size_t NiftiFile::voxel_bytes() const {
  size_t n = static_cast<size_t>(bytes_per_voxel(header.datatype));
  for (int i = 1; i <= 4; ++i) n *= static_cast<size_t>(std::max<int64_t>(header.dim[i], 1));
  return n;
}

NiftiFile decode_nifti(std::vector<uint8_t> bytes, const std::string& where) {
  uint64_t voxel_bytes = 0;
  NiftiFile f;
  f.header = parse_header(bytes.data(), bytes.size(), where, &voxel_bytes);
  const uint64_t end = static_cast<uint64_t>(f.header.vox_offset) + voxel_bytes;
  if (end > bytes.size())
    throw Error(where,
                "truncated: the header's " + dims_text(f.header) + " " +
                    datatype_name(f.header.datatype) + " voxels need " + std::to_string(end) +
                    " bytes, the file holds " + std::to_string(bytes.size()),
                "the file is incomplete; copy or export it again");
  f.storage = std::move(bytes);
  return f;
}

NiftiFile decode_nifti(const uint8_t* bytes, size_t size, const std::string& where) {
  return decode_nifti(std::vector<uint8_t>(bytes, bytes + size), where);
}

NiftiFile decode_nifti_file_bytes(const uint8_t* bytes, size_t size, const std::string& where,
                                  Inflater inflater) {
  if (!is_gzip(bytes, size)) return decode_nifti(bytes, size, where);
  // Inflate the header first, so that the output is bounded by what the header claims (a corrupt
  // header or a decompression bomb fails here rather than exhausting memory).
  std::vector<uint8_t> head = gunzip_prefix(bytes, size, kN2HeaderSize, where);
  uint64_t voxel_bytes = 0;
  NiftiHeader h = parse_header(head.data(), head.size(), where, &voxel_bytes);
  check_fits_memory(h, voxel_bytes, where);
  const uint64_t expected = static_cast<uint64_t>(h.vox_offset) + voxel_bytes;
  if (expected > max_inflated_size(size))
    throw Error(where,
                "truncated: the header's " + dims_text(h) + " " + datatype_name(h.datatype) +
                    " voxels need " + std::to_string(expected) + " bytes, more than a " +
                    std::to_string(size) + "-byte gzip stream can hold",
                "the file is incomplete or its header is corrupt");
  return decode_nifti(gunzip(bytes, size, where, inflater, expected + (uint64_t{1} << 20)), where);
}

NiftiFile read_nifti_file(const std::string& path, Inflater inflater) {
  std::vector<uint8_t> raw = read_file(path);
  if (!is_gzip(raw.data(), raw.size())) return decode_nifti(std::move(raw), path);
  return decode_nifti_file_bytes(raw.data(), raw.size(), path, inflater);
}

NiftiHeader read_nifti_header(const std::string& path) {
  // The header sits at the start: 64 KiB of a .gz always inflates to more than a header.
  std::vector<uint8_t> raw = read_file(path, size_t{1} << 16);
  uint64_t voxel_bytes = 0;
  if (!is_gzip(raw.data(), raw.size())) {
    NiftiHeader h = parse_header(raw.data(), raw.size(), path, &voxel_bytes);
    const uint64_t file_size = std::filesystem::file_size(path);
    if (static_cast<uint64_t>(h.vox_offset) + voxel_bytes > file_size)
      throw Error(path, "truncated: the header's " + dims_text(h) + " voxels need " +
                            std::to_string(h.vox_offset + voxel_bytes) + " bytes, the file holds " +
                            std::to_string(file_size));
    return h;
  }
  std::vector<uint8_t> head = gunzip_prefix(raw.data(), raw.size(), kN2HeaderSize, path);
  return parse_header(head.data(), head.size(), path, &voxel_bytes);
}

Volume volume_frame(const NiftiHeader& h) {
  return canonical_frame<float>(h);
}

void convert_voxels(const NiftiFile& f, const Volume& frame, float* out, bool allow_nonfinite,
                    const std::string& where) {
  convert_any(f, frame.to_canonical, out);
  if (allow_nonfinite) return;
  const size_t n = f.voxel_bytes() / bytes_per_voxel(f.header.datatype);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += !std::isfinite(out[i]);
  if (bad)
    throw Error(where, std::to_string(bad) + " voxel(s) are NaN or Inf",
                "fix the export, or replace them with 0 (e.g. nibabel + numpy.nan_to_num)");
}

Volume to_volume(NiftiFile f, bool allow_nonfinite, const std::string& where) {
  Volume img = volume_frame(f.header);
  img.data.resize(f.voxel_bytes() / bytes_per_voxel(f.header.datatype));
  convert_voxels(f, img, img.data.data(), allow_nonfinite, where);
  return img;
}

Volume read_volume(const std::string& path, bool allow_nonfinite, Inflater inflater) {
  return to_volume(read_nifti_file(path, inflater), allow_nonfinite, path);
}

LabelMap read_labels(const std::string& path) {
  NiftiFile f = read_nifti_file(path);
  const NiftiHeader& h = f.header;
  LabelMap img = canonical_frame<uint8_t>(h);
  const size_t n = f.voxel_bytes() / bytes_per_voxel(h.datatype);
  img.data.resize(n);
  const bool scaled = h.scl_slope != 0 && !(h.scl_slope == 1 && h.scl_inter == 0);
  if (h.datatype == kNiftiUInt8 && !scaled) {  // the common case: nothing to check
    convert_any(f, img.to_canonical, img.data.data());
    return img;
  }
  // Anything else is checked in float (exact for every integer a label map may hold).
  std::vector<float> v(n);
  convert_any(f, img.to_canonical, v.data());
  f.storage = {};
  for (size_t i = 0; i < n; ++i) {
    const float x = v[i];
    if (!(x >= 0 && x <= 255 && x == std::floor(x)))
      throw Error(path,
                  "is not a label map: a voxel holds " + std::to_string(x) +
                      " (labels must be integers 0..255)",
                  "pass the segmentation file, not an image or a probability map");
    img.data[i] = static_cast<uint8_t>(x);
  }
  return img;
}

// ------------------------------------------------------------------ writing

std::vector<uint8_t> encode_nifti(const NiftiHeader& h, const void* voxels, size_t n_bytes) {
  const bool v2 = h.version == 2;
  const size_t offset = v2 ? 544 : 352;
  std::vector<uint8_t> buf(offset + n_bytes, 0);
  Writer w{buf};
  if (!v2) {
    w.put<int32_t>(0, 348);
    w.put<uint8_t>(39, h.dim_info);
    for (int i = 0; i < 8; ++i) {
      if (h.dim[i] > 32767)
        throw Error(
            "NIfTI-1 writer",
            "dim[" + std::to_string(i) + "] = " + std::to_string(h.dim[i]) + " exceeds 32767",
            "write NIfTI-2 (WriteOptions::version = 2)");
      w.put<int16_t>(40 + 2 * i, static_cast<int16_t>(h.dim[i]));
    }
    w.put<float>(56, h.intent_p1);
    w.put<float>(60, h.intent_p2);
    w.put<float>(64, h.intent_p3);
    w.put<int16_t>(68, h.intent_code);
    w.put<int16_t>(70, h.datatype);
    w.put<int16_t>(72, h.bitpix);
    w.put<int16_t>(74, h.slice_start);
    for (int i = 0; i < 8; ++i) w.put<float>(76 + 4 * i, h.pixdim[i]);
    w.put<float>(108, offset);
    w.put<float>(112, h.scl_slope);
    w.put<float>(116, h.scl_inter);
    w.put<int16_t>(120, h.slice_end);
    w.put<uint8_t>(122, h.slice_code);
    w.put<uint8_t>(123, h.xyzt_units);
    w.put<float>(124, h.cal_max);
    w.put<float>(128, h.cal_min);
    w.put<float>(132, h.slice_duration);
    w.put<float>(136, h.toffset);
    w.str(148, h.descrip, 80);
    w.str(228, h.aux_file, 24);
    w.put<int16_t>(252, h.qform_code);
    w.put<int16_t>(254, h.sform_code);
    w.put<float>(256, h.quatern_b);
    w.put<float>(260, h.quatern_c);
    w.put<float>(264, h.quatern_d);
    w.put<float>(268, h.qoffset_x);
    w.put<float>(272, h.qoffset_y);
    w.put<float>(276, h.qoffset_z);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) w.put<float>(280 + 16 * i + 4 * j, h.srow[i][j]);
    w.str(328, h.intent_name, 16);
    std::memcpy(buf.data() + 344, "n+1\0", 4);
  } else {
    w.put<int32_t>(0, 540);
    std::memcpy(buf.data() + 4, "n+2\0\r\n\032\n", 8);
    w.put<int16_t>(12, h.datatype);
    w.put<int16_t>(14, h.bitpix);
    for (int i = 0; i < 8; ++i) w.put<int64_t>(16 + 8 * i, h.dim[i]);
    w.put<double>(80, h.intent_p1);
    w.put<double>(88, h.intent_p2);
    w.put<double>(96, h.intent_p3);
    for (int i = 0; i < 8; ++i) w.put<double>(104 + 8 * i, h.pixdim[i]);
    w.put<int64_t>(168, offset);
    w.put<double>(176, h.scl_slope);
    w.put<double>(184, h.scl_inter);
    w.put<double>(192, h.cal_max);
    w.put<double>(200, h.cal_min);
    w.put<double>(208, h.slice_duration);
    w.put<double>(216, h.toffset);
    w.put<int64_t>(224, h.slice_start);
    w.put<int64_t>(232, h.slice_end);
    w.str(240, h.descrip, 80);
    w.str(320, h.aux_file, 24);
    w.put<int32_t>(344, h.qform_code);
    w.put<int32_t>(348, h.sform_code);
    w.put<double>(352, h.quatern_b);
    w.put<double>(360, h.quatern_c);
    w.put<double>(368, h.quatern_d);
    w.put<double>(376, h.qoffset_x);
    w.put<double>(384, h.qoffset_y);
    w.put<double>(392, h.qoffset_z);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) w.put<double>(400 + 32 * i + 8 * j, h.srow[i][j]);
    w.put<int32_t>(496, h.slice_code);
    w.put<int32_t>(500, h.xyzt_units);
    w.put<int32_t>(504, h.intent_code);
    w.str(508, h.intent_name, 16);
    w.put<uint8_t>(524, h.dim_info);
  }
  if (n_bytes) std::memcpy(buf.data() + offset, voxels, n_bytes);
  return buf;
}

namespace {

// The header of an output: the source's geometry, this image's shape and type.
NiftiHeader output_header(const NiftiHeader& src, const std::array<int64_t, 3>& file_dim,
                          int64_t n_channels, int32_t datatype, const WriteOptions& opt) {
  NiftiHeader h = src;
  if (opt.version == 1 || opt.version == 2) h.version = opt.version;
  if (h.version == 1 &&
      (file_dim[0] > 32767 || file_dim[1] > 32767 || file_dim[2] > 32767 || n_channels > 32767))
    h.version = 2;
  h.dim = {n_channels > 1 ? 4 : 3, file_dim[0], file_dim[1], file_dim[2], n_channels, 1, 1, 1};
  if (n_channels > 1 && h.pixdim[4] == 0) h.pixdim[4] = 1;
  h.datatype = datatype;
  h.bitpix = 8 * bytes_per_voxel(datatype);
  h.scl_slope = opt.scl_slope;
  h.scl_inter = opt.scl_inter;
  h.cal_min = h.cal_max = 0;
  h.intent_code = 0;
  h.intent_p1 = h.intent_p2 = h.intent_p3 = 0;
  h.intent_name.clear();
  h.descrip = std::string("kdseg ") + KDSEG_VERSION;
  h.aux_file.clear();
  h.swapped = false;
  return h;
}

template <class D>
void quantise(const float* in, size_t n, double slope, double inter, D* out) {
  const double lo = static_cast<double>(std::numeric_limits<D>::lowest());
  const double hi = static_cast<double>(std::numeric_limits<D>::max());
  const bool scaled = slope != 0;
  for (size_t i = 0; i < n; ++i) {
    double v = in[i];
    if (scaled) v = (v - inter) / slope;
    if constexpr (std::is_integral_v<D>) {
      if (std::isnan(v)) v = 0;  // integers have no NaN
      v = std::nearbyint(v);
      v = std::clamp(v, lo, hi);
      out[i] = static_cast<D>(v);
    } else {
      out[i] = static_cast<D>(v);
    }
  }
}

std::vector<uint8_t> pack(const std::vector<float>& v, int32_t datatype, double slope, double inter,
                          const std::string& where) {
  const int bpv = bytes_per_voxel(datatype);
  if (bpv == 0) throw Error(where, std::string("cannot write datatype ") + datatype_name(datatype));
  std::vector<uint8_t> out(v.size() * bpv);
  switch (datatype) {
    case kNiftiUInt8:
      quantise(v.data(), v.size(), slope, inter, out.data());
      break;
    case kNiftiInt8:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<int8_t*>(out.data()));
      break;
    case kNiftiInt16:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<int16_t*>(out.data()));
      break;
    case kNiftiUInt16:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<uint16_t*>(out.data()));
      break;
    case kNiftiInt32:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<int32_t*>(out.data()));
      break;
    case kNiftiUInt32:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<uint32_t*>(out.data()));
      break;
    case kNiftiFloat32:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<float*>(out.data()));
      break;
    case kNiftiFloat64:
      quantise(v.data(), v.size(), slope, inter, reinterpret_cast<double*>(out.data()));
      break;
  }
  return out;
}

void write_encoded(const std::string& path, const NiftiHeader& h, const std::vector<uint8_t>& vox,
                   int compression) {
  std::vector<uint8_t> nii = encode_nifti(h, vox.data(), vox.size());
  if (ends_with(path, ".gz")) {
    std::vector<uint8_t> gz = gzip(nii.data(), nii.size(), compression);
    write_file_atomic(path, gz.data(), gz.size());
  } else {
    write_file_atomic(path, nii.data(), nii.size());
  }
}

template <class T>
void check_shape(const Image<T>& img, const std::string& path) {
  if (img.n_voxels() <= 0 || img.n_channels <= 0 ||
      img.data.size() != static_cast<size_t>(img.n_voxels() * img.n_channels))
    throw Error(path, "image to write has " + std::to_string(img.data.size()) +
                          " voxels but its dims say " +
                          std::to_string(img.n_voxels() * img.n_channels));
  if (!ends_with(path, ".nii") && !ends_with(path, ".nii.gz"))
    throw Error(path, "output name must end in .nii or .nii.gz");
}

}  // namespace

void write_volume(const std::string& path, const Volume& img, const WriteOptions& opt) {
  check_shape(img, path);
  std::vector<float> file_order(img.data.size());
  std::array<int64_t, 3> file_dim;
  from_canonical(img.data.data(), img.dim, img.n_channels, img.to_canonical, file_order.data(),
                 file_dim);
  const int32_t type = opt.datatype ? opt.datatype : kNiftiFloat32;
  NiftiHeader h = output_header(img.source, file_dim, img.n_channels, type, opt);
  write_encoded(path, h, pack(file_order, type, opt.scl_slope, opt.scl_inter, path),
                opt.compression);
}

void write_labels(const std::string& path, const LabelMap& img, const WriteOptions& opt) {
  check_shape(img, path);
  std::vector<uint8_t> file_order(img.data.size());
  std::array<int64_t, 3> file_dim;
  from_canonical(img.data.data(), img.dim, img.n_channels, img.to_canonical, file_order.data(),
                 file_dim);
  const int32_t type = opt.datatype ? opt.datatype : kNiftiUInt8;
  WriteOptions o = opt;
  o.scl_slope = o.scl_inter = 0;
  NiftiHeader h = output_header(img.source, file_dim, img.n_channels, type, o);
  if (type == kNiftiUInt8) {
    write_encoded(path, h, file_order, opt.compression);
  } else {
    std::vector<float> f(file_order.begin(), file_order.end());
    write_encoded(path, h, pack(f, type, 0, 0, path), opt.compression);
  }
}

template <class A, class B>
bool same_grid(const Image<A>& a, const Image<B>& b, double tol_mm) {
  if (a.dim != b.dim) return false;
  // Compare the canonical voxel-to-world maps at the grid's corners.
  const Mat44 ma = affine(a.source), mb = affine(b.source);
  for (int corner = 0; corner < 8; ++corner) {
    // A corner in canonical voxel space, mapped back to each file's voxel space.
    auto world = [&](const Mat44& m, const AxisMap& map, const std::array<int64_t, 3>& dim) {
      double file_ijk[3] = {0, 0, 0};
      for (int ax = 0; ax < 3; ++ax) {
        int64_t c = (corner >> ax) & 1 ? dim[ax] - 1 : 0;
        file_ijk[map.perm[ax]] = map.flip[ax] ? dim[ax] - 1 - c : c;
      }
      std::array<double, 3> w{};
      for (int i = 0; i < 3; ++i)
        w[i] = m[i][0] * file_ijk[0] + m[i][1] * file_ijk[1] + m[i][2] * file_ijk[2] + m[i][3];
      return w;
    };
    auto wa = world(ma, a.to_canonical, a.dim), wb = world(mb, b.to_canonical, b.dim);
    for (int i = 0; i < 3; ++i)
      if (std::fabs(wa[i] - wb[i]) > tol_mm) return false;
  }
  return true;
}

template bool same_grid(const Image<float>&, const Image<float>&, double);
template bool same_grid(const Image<uint8_t>&, const Image<uint8_t>&, double);
template bool same_grid(const Image<float>&, const Image<uint8_t>&, double);
template bool same_grid(const Image<uint8_t>&, const Image<float>&, double);

}  // namespace kdseg
