#include "hash.hpp"

#include <cstring>
#include <random>

namespace pyaudit {
namespace {

__extension__ typedef unsigned __int128 u128;

std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept {
    const u128 r = static_cast<u128>(a) * b;
    return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

std::uint64_t load8(const char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

std::uint64_t random_seed() {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

const std::uint64_t kSeed = random_seed();
constexpr std::uint64_t kOdd1 = 0xa0761d6478bd642fULL;
constexpr std::uint64_t kOdd2 = 0xe7037ed1a0b428dbULL;

}  // namespace

std::uint64_t hash_bytes(std::string_view bytes) noexcept {
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    std::uint64_t state = kSeed ^ mix(static_cast<std::uint64_t>(n) ^ kOdd1, kOdd2);
    if (n >= 64) {  // four independent lanes: the multiplies overlap
        std::uint64_t lanes[4] = {state, state ^ kOdd1, state ^ kOdd2, state + kOdd1};
        while (n >= 64) {
            for (int k = 0; k < 4; ++k) {
                lanes[k] = mix(load8(p + 16 * k) ^ kOdd1, load8(p + 16 * k + 8) ^ lanes[k]);
            }
            p += 64;
            n -= 64;
        }
        state = mix(lanes[0] ^ lanes[2], lanes[1] ^ kOdd2) ^ mix(lanes[3] ^ kOdd1, lanes[1] ^ lanes[2]);
    }
    while (n >= 16) {
        state = mix(load8(p) ^ kOdd1, load8(p + 8) ^ state);
        p += 16;
        n -= 16;
    }
    std::uint64_t a = 0;
    std::uint64_t b = 0;
    if (n >= 8) {
        a = load8(p);
        b = load8(p + n - 8);  // overlaps: every tail byte counts once at least
    } else {
        for (std::size_t i = 0; i < n; ++i) a |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
    }
    return mix(mix(a ^ kOdd1, b ^ state) ^ kOdd2, static_cast<std::uint64_t>(bytes.size()) ^ kOdd1);
}

}  // namespace pyaudit
