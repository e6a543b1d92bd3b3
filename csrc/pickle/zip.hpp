// The central directory of a zip archive (torch's checkpoint container), read from
// the end of the file: the end record (and its zip64 form), then the directory.
// Record contents are never read or decompressed here; a record is a name, where its
// local header starts and how many bytes it claims.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pickle/source.hpp"

namespace pyaudit::pickle {

inline constexpr std::uint64_t kMaxCentralDirectory = 256ull << 20;  // bytes
inline constexpr std::uint64_t kLocalHeader = 30;                   // fixed part

struct ZipEntry {
    std::string name;
    std::uint64_t local_offset = 0;
    std::uint64_t compressed = 0;
    std::uint64_t uncompressed = 0;
    std::uint16_t method = 0;  // 0: stored
    std::uint16_t flags = 0;   // bit 0: encrypted
};

struct ZipDirectory {
    std::vector<ZipEntry> entries;
    std::uint64_t directory_offset = 0;
    std::uint64_t directory_size = 0;
};

enum class ZipStatus : std::uint8_t { ok, not_zip, truncated, malformed, unsupported, io_error, overlap };

struct ZipResult {
    ZipStatus status = ZipStatus::ok;
    std::string message;
};

// Does the file start like a zip archive (a local header or an empty archive)?
bool starts_like_zip(const unsigned char* first4, std::size_t size) noexcept;

// Reads the directory; checks that every record lies inside the file, before the
// directory, and that no two records overlap.
ZipResult read_zip_directory(Source& source, ZipDirectory& out);

// Where a record's data starts: reads its 30-byte local header (and nothing else).
ZipResult record_data_offset(Source& source, const ZipEntry& entry, std::uint64_t& data_offset);

}  // namespace pyaudit::pickle
