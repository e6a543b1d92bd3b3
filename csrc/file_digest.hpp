// Whole small files (configs, indexes, run arguments) read and hashed off the GIL.
//
// A sweep reads the same config.json and index in every checkpoint of a run. Hashing
// them on the reading threads lets the Python layer look up what it already parsed
// from equal bytes without reading or hashing them itself.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pyaudit {

struct FileDigest {
    bool ok = false;          // a regular file, read whole, within max_size
    std::uint64_t size = 0;
    std::uint64_t digest = 0;  // hash_bytes of the contents
};

FileDigest digest_file(const std::string& path, std::uint64_t max_size);

// On up to `jobs` threads (0: one per core); results in input order. Never throws for
// a missing or unreadable file (ok is false).
std::vector<FileDigest> digest_files(const std::vector<std::string>& paths, std::uint64_t max_size,
                                     unsigned jobs);

}  // namespace pyaudit
