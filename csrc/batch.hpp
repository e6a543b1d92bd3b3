// Many headers at once, on a pool of threads; results in input order.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "header.hpp"

namespace pyaudit {

// Runs `read_header_file` over every path with up to `jobs` threads (0: one per
// core). Never throws for a bad file. Safe to call without the GIL.
// Equal headers within the call are parsed once and shared (HeaderCache); every
// result's digest is set.
// `from_page_cache`, when given, is set to how many files' starts were in the page cache.
std::vector<std::shared_ptr<const ParsedHeader>> read_header_files(const std::vector<std::string>& paths,
                                                                   unsigned jobs,
                                                                   std::size_t* from_page_cache = nullptr);

unsigned default_jobs() noexcept;

}  // namespace pyaudit
