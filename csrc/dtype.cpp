#include "dtype.hpp"

#include <array>

namespace pyaudit {
namespace {

struct DtypeRow {
    std::string_view name;
    std::uint32_t bits;
};

// Indexed by Dtype; the list and widths of the reference loader (safetensors 0.8).
constexpr std::array<DtypeRow, kDtypeCount> kRows{{
    {"BOOL", 8},      {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8},
    {"F8_E4M3", 8},   {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8},
    {"F4", 4},        {"F6_E2M3", 6},     {"F6_E3M2", 6},     {"I16", 16},
    {"U16", 16},      {"F16", 16},        {"BF16", 16},       {"I32", 32},
    {"U32", 32},      {"F32", 32},        {"C64", 64},        {"F64", 64},
    {"I64", 64},      {"U64", 64},
}};

}  // namespace

std::string_view dtype_name(Dtype dtype) noexcept {
    return kRows[static_cast<std::size_t>(dtype)].name;
}

std::uint32_t dtype_bits(Dtype dtype) noexcept {
    return kRows[static_cast<std::size_t>(dtype)].bits;
}

std::optional<Dtype> dtype_from_name(std::string_view name) noexcept {
    for (std::size_t i = 0; i < kRows.size(); ++i) {
        if (kRows[i].name == name) {
            return static_cast<Dtype>(i);
        }
    }
    return std::nullopt;
}

}  // namespace pyaudit
