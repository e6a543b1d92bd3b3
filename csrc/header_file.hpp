// Reading a header from a file on disk: only the header bytes are read.
//
// pread rather than a mapping: two syscalls read the length prefix and the JSON,
// no page tables are set up, and POSIX_FADV_RANDOM keeps the kernel from reading
// ahead into the data section (on a cold cache, readahead would pull megabytes
// of tensor data to serve a 20 KB header).
#pragma once

#include <string>

#include "header.hpp"

namespace pyaudit {

// Bytes read by the first pread; a longer header takes a second one.
inline constexpr std::size_t kFirstRead = 32 * 1024;

// Never throws for a bad or unreadable file: the result carries the issue.
ParsedHeader read_header_file(const std::string& path);

}  // namespace pyaudit
