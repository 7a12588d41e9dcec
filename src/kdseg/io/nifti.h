#pragma once
// Reading and writing NIfTI-1 / NIfTI-2 files, .nii and .nii.gz (gzip inflated with libdeflate).
// Read functions return images in canonical RAS+ orientation (orientation.h); write functions put
// the voxels back in the orientation of the image's `source` header and copy its geometry.
#include <cstdint>
#include <string>
#include <vector>

#include "kdseg/io/gzip.h"
#include "kdseg/io/image.h"
#include "kdseg/io/nifti_header.h"

namespace kdseg {

// A decoded file: the header and the file's bytes, voxels as stored (file byte order and axis
// order) from header.vox_offset on. Holding the file rather than a copy of its voxels saves a
// buffer per read (page faults dominate reading on small VMs).
struct NiftiFile {
  NiftiHeader header;
  std::vector<uint8_t> storage;  // the whole uncompressed file
  const uint8_t* voxels() const { return storage.data() + header.vox_offset; }
  size_t voxel_bytes() const;  // header.dim[1..4] voxels of header.datatype
};

// Parses a complete (already decompressed) NIfTI byte stream. `where` names the source in errors.
// Throws kdseg::Error for anything malformed: wrong magic, bad sizeof_hdr, unsupported datatype,
// dims that are negative, overflow or need more bytes than the stream holds.
NiftiFile decode_nifti(std::vector<uint8_t> bytes, const std::string& where);
NiftiFile decode_nifti(const uint8_t* bytes, size_t size, const std::string& where);
// Decodes the bytes of a .nii or a .nii.gz file held in memory (what the file readers and the
// fuzzer use). The inflate is bounded by what the header declares.
NiftiFile decode_nifti_file_bytes(const uint8_t* bytes, size_t size, const std::string& where,
                                  Inflater inflater = Inflater::libdeflate);
// Converts a decoded file to float32 (scaled) in canonical orientation.
Volume to_volume(NiftiFile file, bool allow_nonfinite, const std::string& where);
// to_volume in two steps, for a caller that owns the destination (load_case writes each modality
// straight into its channel of the case's image): the volume's geometry without voxels, then its
// voxels into `out` (frame.n_voxels() × frame.n_channels floats), checked as to_volume checks.
Volume volume_frame(const NiftiHeader& h);
void convert_voxels(const NiftiFile& file, const Volume& frame, float* out, bool allow_nonfinite,
                    const std::string& where);
// Reads the whole file (inflating .gz) and decodes it.
NiftiFile read_nifti_file(const std::string& path, Inflater inflater = Inflater::libdeflate);
// Reads only the header (inflating just enough of a .gz): for `kdseg check` and layout discovery.
NiftiHeader read_nifti_header(const std::string& path);

// Whole file in float32, scaled by scl_slope/scl_inter, canonical orientation; 3D or 4D.
// Rejects NaN/Inf voxels unless allow_nonfinite.
Volume read_volume(const std::string& path, bool allow_nonfinite = false,
                   Inflater inflater = Inflater::libdeflate);
// A label map: every voxel must be an integer in [0, 255] (after scaling); canonical orientation.
LabelMap read_labels(const std::string& path);

struct WriteOptions {
  int32_t datatype = 0;  // 0: float32 for Volume, uint8 for LabelMap; e.g. kNiftiInt16
  double scl_slope = 0;  // stored = (value - inter) / slope when slope != 0, e.g. 1/255
  double scl_inter = 0;
  int compression = 4;  // gzip level for .nii.gz, 1 (fast) .. 12 (small), e.g. 6
  int version = 0;      // 0: keep the source header's version; 1 or 2 forces it
};

// Writes atomically (temporary name + rename) in the source header's orientation and geometry.
void write_volume(const std::string& path, const Volume& img, const WriteOptions& opt = {});
void write_labels(const std::string& path, const LabelMap& img, const WriteOptions& opt = {});
// Encodes without touching the disk (tests, fuzzing): header + voxels, uncompressed .nii bytes.
std::vector<uint8_t> encode_nifti(const NiftiHeader& h, const void* voxels, size_t n_bytes);

}  // namespace kdseg
