#include "kdseg/io/gzip.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "kdseg/util/error.h"

namespace kdseg {

uint64_t max_inflated_size(uint64_t compressed) {
  return compressed * 1032 + (1 << 16);
}

namespace {

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", n / double(uint64_t{1} << 30));
  else if (n >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", n / double(uint64_t{1} << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(n));
  return buf;
}

struct DecompressorFree {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};
struct CompressorFree {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};

const char* kCorruptHint = "the file is damaged or incomplete; copy or export it again";

// libdeflate inflates one whole member into a buffer that must be large enough: the trailer's
// ISIZE (size mod 2^32) gives the size of single-member files, and the buffer grows otherwise.
std::vector<uint8_t> gunzip_libdeflate(const uint8_t* in, size_t size, const std::string& where,
                                       uint64_t max_bytes) {
  std::unique_ptr<libdeflate_decompressor, DecompressorFree> d(libdeflate_alloc_decompressor());
  if (!d) throw Error(where, "out of memory allocating the inflater");
  std::vector<uint8_t> out;
  size_t in_pos = 0, out_pos = 0;
  uint64_t guess = size >= 18 ? uint64_t(in[size - 4]) | uint64_t(in[size - 3]) << 8 |
                                    uint64_t(in[size - 2]) << 16 | uint64_t(in[size - 1]) << 24
                              : 0;
  if (guess < size) guess = size * 4;  // ISIZE wrapped or multi-member
  // Deflate cannot expand data more than ~1032:1, so a trailer claiming more is corrupt: never
  // allocate past what the input could hold.
  guess = std::min<uint64_t>({guess, max_bytes, max_inflated_size(size)});
  while (in_pos < size) {
    if (size - in_pos < 18 || !is_gzip(in + in_pos, size - in_pos)) {
      if (in_pos > 0) break;  // trailing garbage after a complete member: ignore it, as gzip does
      throw Error(where, "not a gzip stream", kCorruptHint);
    }
    for (;;) {
      uint64_t avail = out.size() - out_pos;
      if (avail == 0 || out.size() < out_pos + guess) {
        uint64_t want = out_pos + std::max<uint64_t>(guess, 1 << 16);
        if (want > max_bytes + 1) want = max_bytes + 1;
        out.resize(want);
      }
      size_t in_used = 0, out_used = 0;
      libdeflate_result r =
          libdeflate_gzip_decompress_ex(d.get(), in + in_pos, size - in_pos, out.data() + out_pos,
                                        out.size() - out_pos, &in_used, &out_used);
      if (r == LIBDEFLATE_SUCCESS) {
        in_pos += in_used;
        out_pos += out_used;
        if (out_pos > max_bytes)
          throw Error(where, "inflates to more than " + human_bytes(max_bytes),
                      "the header's dimensions and the compressed data disagree");
        break;
      }
      if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
        if (out.size() > max_bytes)
          throw Error(where, "inflates to more than " + human_bytes(max_bytes),
                      "the header's dimensions and the compressed data disagree");
        guess = std::min<uint64_t>((out.size() - out_pos) * 2 + (1 << 20), max_bytes + 1);
        out.resize(out_pos + guess);
        continue;
      }
      if (r == LIBDEFLATE_SHORT_OUTPUT) throw Error(where, "gzip stream ends early", kCorruptHint);
      throw Error(where, "corrupt or truncated gzip stream (CRC, length or deflate data invalid)",
                  kCorruptHint);
    }
  }
  out.resize(out_pos);
  return out;
}

std::vector<uint8_t> gunzip_zlib(const uint8_t* in, size_t size, const std::string& where,
                                 uint64_t max_bytes, size_t stop_after) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 32) != Z_OK) throw Error(where, "cannot initialise zlib");
  std::vector<uint8_t> out(std::min<uint64_t>(std::max<size_t>(size * 4, 1 << 16), max_bytes + 1));
  z.next_in = const_cast<Bytef*>(in);
  z.avail_in = 0;
  size_t in_left = size;
  size_t out_pos = 0;
  int r = Z_OK;
  for (;;) {
    if (z.avail_in == 0 && in_left > 0) {
      uInt chunk = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
      z.avail_in = chunk;
      in_left -= chunk;
    }
    if (out_pos == out.size()) {
      if (out.size() > max_bytes) {
        inflateEnd(&z);
        throw Error(where, "inflates to more than " + human_bytes(max_bytes));
      }
      out.resize(std::min<uint64_t>(out.size() * 2, max_bytes + 1));
    }
    z.next_out = out.data() + out_pos;
    uInt avail = static_cast<uInt>(std::min<size_t>(out.size() - out_pos, 1u << 30));
    z.avail_out = avail;
    r = inflate(&z, Z_NO_FLUSH);
    out_pos += avail - z.avail_out;
    if (out_pos >= stop_after) break;
    if (r == Z_STREAM_END) {
      // Another member may follow.
      size_t consumed = size - in_left - z.avail_in;
      if (consumed + 18 <= size && is_gzip(in + consumed, size - consumed)) {
        inflateReset(&z);
        continue;
      }
      break;
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      inflateEnd(&z);
      throw Error(where,
                  std::string("corrupt gzip stream (zlib: ") + (z.msg ? z.msg : "error") + ")",
                  kCorruptHint);
    }
    if (r == Z_BUF_ERROR && z.avail_in == 0 && in_left == 0) {
      inflateEnd(&z);
      throw Error(where, "truncated gzip stream (ends before the end of its data)", kCorruptHint);
    }
  }
  inflateEnd(&z);
  out.resize(out_pos);
  return out;
}

}  // namespace

bool is_gzip(const uint8_t* bytes, size_t size) {
  return size >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

std::vector<uint8_t> gunzip(const uint8_t* bytes, size_t size, const std::string& where,
                            Inflater inflater, uint64_t max_bytes) {
  if (inflater == Inflater::zlib) return gunzip_zlib(bytes, size, where, max_bytes, SIZE_MAX);
  return gunzip_libdeflate(bytes, size, where, max_bytes);
}

std::vector<uint8_t> gunzip_prefix(const uint8_t* bytes, size_t size, size_t n,
                                   const std::string& where) {
  return gunzip_zlib(bytes, size, where, n + (1 << 16), n);
}

std::vector<uint8_t> gzip(const uint8_t* bytes, size_t size, int level) {
  std::unique_ptr<libdeflate_compressor, CompressorFree> c(libdeflate_alloc_compressor(level));
  if (!c) throw Error("gzip", "invalid compression level " + std::to_string(level), "use 1..12");
  std::vector<uint8_t> out(libdeflate_gzip_compress_bound(c.get(), size));
  size_t n = libdeflate_gzip_compress(c.get(), bytes, size, out.data(), out.size());
  if (n == 0) throw Error("gzip", "compression failed");
  out.resize(n);
  return out;
}

std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path, "no such file");
  if (std::filesystem::is_directory(path, ec)) throw Error(path, "is a folder, not a file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<uint8_t> out;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    long n = std::ftell(f.get());
    if (n > 0) {
      out.resize(std::min(static_cast<size_t>(n), max_bytes));
      std::rewind(f.get());
      size_t got = std::fread(out.data(), 1, out.size(), f.get());
      if (got != out.size())
        throw Error(path, "read error: got " + std::to_string(got) + " of " +
                              std::to_string(out.size()) + " bytes");
      return out;
    }
    std::rewind(f.get());
  }
  uint8_t buf[1 << 16];
  size_t got;
  while (out.size() < max_bytes && (got = std::fread(buf, 1, sizeof buf, f.get())) > 0)
    out.insert(out.end(), buf, buf + std::min(got, max_bytes - out.size()));
  return out;
}

namespace {

std::atomic<uint64_t> g_syncs{0};
std::atomic<uint64_t> g_temporaries{0};

// `path`.tmp.<pid>.<n>: unique to this call, so that two threads (e.g. the preprocessing cache's,
// which write the same plan.json when a plan's first cases are built together) or two processes
// writing one file never share a temporary file; the last rename wins, whole.
std::string temporary_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(++g_temporaries);
}

// fsync of an open file; a failure means the data may not be on disk.
void sync_file(int fd, const std::string& path) {
  if (::fsync(fd) != 0)
    throw Error(path, std::string("fsync failed: ") + std::strerror(errno), "is the disk full?");
  ++g_syncs;
}

// fsync of the folder holding `path`, so that a rename into it survives a power loss. Some file
// systems cannot sync a folder (EINVAL): nothing more can be done there.
void sync_folder_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  const int rc = ::fsync(fd), e = errno;
  ::close(fd);
  if (rc != 0 && e != EINVAL && e != EROFS)
    throw Error(dir.string(), std::string("fsync of the folder failed: ") + std::strerror(e));
  ++g_syncs;
}

}  // namespace

uint64_t durable_sync_count() {
  return g_syncs.load();
}

void write_file_atomic(const std::string& path, const uint8_t* bytes, size_t size) {
  namespace fs = std::filesystem;
  fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = temporary_name(path);
  {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(tmp.c_str(), "wb"), &std::fclose);
    if (!f)
      throw Error(path, std::string("cannot write: ") + std::strerror(errno),
                  "check that the folder exists and is writable");
    if (size > 0 && std::fwrite(bytes, 1, size, f.get()) != size) {
      int e = errno;
      f.reset();
      std::remove(tmp.c_str());
      throw Error(path, std::string("write failed: ") + std::strerror(e), "is the disk full?");
    }
    if (std::fflush(f.get()) != 0) {
      int e = errno;
      f.reset();
      std::remove(tmp.c_str());
      throw Error(path, std::string("write failed: ") + std::strerror(e), "is the disk full?");
    }
    try {
      sync_file(::fileno(f.get()), path);
    } catch (...) {
      f.reset();
      std::remove(tmp.c_str());
      throw;
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(path, "cannot rename the temporary file into place: " + ec.message());
  }
  sync_folder_of(path);
}

void link_or_copy(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path tmp = temporary_name(to);
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (ec) {  // a copy: its bytes are new, sync them before they get the name
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      try {
        sync_file(fd, to);
      } catch (...) {
        ::close(fd);
        throw;
      }
      ::close(fd);
    }
  }
  // rename(2) of one hard link onto another of the same file succeeds and does nothing: the
  // temporary name would stay (and a rerun's folder would differ from the first run's).
  fs::rename(tmp, to);
  fs::remove(tmp, ec);
  sync_folder_of(to);
}

}  // namespace kdseg
