#pragma once
// gzip inflate/deflate. libdeflate is the default (one-shot, several times faster than zlib);
// zlib is kept as the baseline the benchmark compares against.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

enum class Inflater { libdeflate, zlib };

bool is_gzip(const uint8_t* bytes, size_t size);
// The most bytes a gzip stream of `compressed` bytes can inflate to (deflate's ratio is < 1032:1).
uint64_t max_inflated_size(uint64_t compressed);
// Inflates every member of a gzip stream. `max_bytes` bounds the output (a guard against
// decompression bombs); `where` names the source in errors (truncated or corrupt streams).
std::vector<uint8_t> gunzip(const uint8_t* bytes, size_t size, const std::string& where,
                            Inflater inflater = Inflater::libdeflate,
                            uint64_t max_bytes = uint64_t{1} << 36);
// Inflates at least the first `n` bytes (fewer only if the stream is shorter).
std::vector<uint8_t> gunzip_prefix(const uint8_t* bytes, size_t size, size_t n,
                                   const std::string& where);
std::vector<uint8_t> gzip(const uint8_t* bytes, size_t size, int level = 4);

// The whole file, or its first `max_bytes`; throws kdseg::Error naming the path when it cannot
// be read.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes = SIZE_MAX);
// Writes to `path`.tmp.<pid>.<n> (unique per call), fsyncs it, renames it over `path` and fsyncs
// the folder (as SQLite, git and LevelDB do): readers never see a half-written file, and after a
// power loss the file is either the old one or the whole new one, never an empty rename. Threads
// and processes may write the same path at once: each write lands whole, the last one stays.
void write_file_atomic(const std::string& path, const uint8_t* bytes, size_t size);
// Puts `from` at `to` as a hard link, or a copy where links are impossible (another file
// system), through a temporary name; a previous `to` is replaced.
void link_or_copy(const std::string& from, const std::string& to);
// fsync calls made so far by write_file_atomic and link_or_copy in this process (files and
// folders): the seam tests check the calls through.
uint64_t durable_sync_count();

}  // namespace kdseg
