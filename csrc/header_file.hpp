// Reading a header from a file on disk: only the header bytes are read.
//
// pread rather than a mapping: a few syscalls read the length prefix and the
// JSON, and no page tables are set up. POSIX_FADV_RANDOM keeps the kernel from
// reading ahead into the data section (on a cold cache, readahead would pull
// megabytes of tensor data to serve a 20 KB header).
//
// How much to read first depends on where the header is. In the page cache
// (warm), every byte read is a byte copied: one page is read, then exactly the
// rest of the header. On disk (cold), every read is a round trip: one larger
// read fetches most headers in a single request. Which case holds is asked of
// the kernel without touching the file (cachestat, Linux 6.5+); where that is
// not available, the larger first read is used.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "header.hpp"

namespace pyaudit {

// Bytes read first when the start of the file is in the page cache: one page.
inline constexpr std::size_t kFirstRead = 4 * 1024;
// Bytes read first when it is not (or when the kernel cannot say): one request
// that holds most headers.
inline constexpr std::size_t kColdRead = 64 * 1024;
// Headers up to this size are read into a per-thread buffer reused across
// files; larger ones straight into their own memory.
inline constexpr std::size_t kKeepBuffer = 1024 * 1024;

// Valid headers already parsed during one batch read, by digest: a store's
// checkpoints repeat their shards' headers byte for byte, and a header equal in
// every byte (and in file size) to one parsed before is that parse again. Safe to
// share between the threads of a batch.
class HeaderCache {
public:
    std::shared_ptr<const ParsedHeader> find(std::uint64_t digest, std::string_view text,
                                             std::uint64_t file_size) const;
    void add(std::shared_ptr<const ParsedHeader> parsed);  // parsed->digest set

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::vector<std::shared_ptr<const ParsedHeader>>> by_digest_;
};

// Never throws for a bad or unreadable file: the result carries the issue.
ParsedHeader read_header_file(const std::string& path);

// Whether reads can tell a page-cached file (cachestat, Linux 6.5+): false once the
// kernel refused it.
bool cachestat_supported() noexcept;

// The same, sharing the parse of an equal header through `cache` (may be null).
// With a cache, the result's digest is set (hash_bytes of the header text).
// `from_page_cache`, when given, says whether the file's start was in the page cache
// (cachestat; false where the kernel cannot say).
std::shared_ptr<const ParsedHeader> read_header_shared(const std::string& path, HeaderCache* cache,
                                                       bool* from_page_cache = nullptr);

}  // namespace pyaudit
