// Strict UTF-8 validation, the rules of Rust's str::from_utf8.
#pragma once

#include <cstddef>

namespace pyaudit {

// Returns the byte offset of the first invalid sequence, or `size` when valid.
std::size_t first_invalid_utf8(const unsigned char* data, std::size_t size) noexcept;

}  // namespace pyaudit
