// A fast seeded 64-bit hash of bytes, for hash tables and content digests.
//
// Not cryptographic. The seed is drawn at random per process, so no input can be
// crafted ahead of time to collide with another (a memo keyed on a digest cannot
// be fooled by a file made for it).
#pragma once

#include <cstdint>
#include <string_view>

namespace pyaudit {

std::uint64_t hash_bytes(std::string_view bytes) noexcept;

}  // namespace pyaudit
