// Element types of the safetensors format: names and bit widths.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace pyaudit {

enum class Dtype : std::uint8_t {
    BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
    F4, F6_E2M3, F6_E3M2, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

inline constexpr std::size_t kDtypeCount = 22;

std::string_view dtype_name(Dtype dtype) noexcept;
std::uint32_t dtype_bits(Dtype dtype) noexcept;
std::optional<Dtype> dtype_from_name(std::string_view name) noexcept;

}  // namespace pyaudit
