// Checked 64-bit arithmetic for every number a header supplies.
#pragma once

#include <cstdint>

namespace pyaudit {

inline bool checked_add(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
    return !__builtin_add_overflow(a, b, &out);
}

inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
    return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace pyaudit
