#include "utf8.hpp"

#include <cstdint>
#include <cstring>

namespace pyaudit {

std::size_t first_invalid_utf8(const unsigned char* data, std::size_t size) noexcept {
    std::size_t i = 0;
    while (i < size) {
        // ASCII fast path, eight bytes at a time.
        if (i + 8 <= size) {
            std::uint64_t word;
            std::memcpy(&word, data + i, sizeof word);
            if ((word & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        const unsigned char c = data[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t width;
        unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            width = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            width = 3;
            if (c == 0xE0) lo = 0xA0;  // no overlong forms
            if (c == 0xED) hi = 0x9F;  // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            width = 4;
            if (c == 0xF0) lo = 0x90;  // no overlong forms
            if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
        } else {
            return i;
        }
        if (size - i < width) return i;
        if (data[i + 1] < lo || data[i + 1] > hi) return i;
        for (std::size_t k = 2; k < width; ++k) {
            if ((data[i + k] & 0xC0) != 0x80) return i;
        }
        i += width;
    }
    return size;
}

}  // namespace pyaudit
