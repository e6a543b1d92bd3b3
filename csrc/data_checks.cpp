#include "data_checks.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#include "batch.hpp"
#include "file_io.hpp"
#include "header_file.hpp"
#include "parallel.hpp"

namespace pyaudit {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYAUDIT_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define PYAUDIT_MULTIVERSION
#endif

struct Counts {
    std::uint64_t nan = 0;
    std::uint64_t inf = 0;
    std::uint64_t nonzero = 0;  // OR of every element's magnitude bits
};

// IEEE-style floats: exponent all ones -> Inf (mantissa 0) or NaN (mantissa != 0).
// Precise counts, in blocks so the inner loop keeps narrow, vectorisable accumulators.
template <typename U, U kExp, U kMant>
void count_special(const U* p, std::size_t n, Counts& c) {
    std::uint64_t nan = 0, inf = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const U v = p[i];
        const std::uint32_t special = static_cast<U>(v & kExp) == kExp;
        const std::uint32_t mantissa = static_cast<U>(v & kMant) != 0;
        nan += special & mantissa;
        inf += special & (mantissa ^ 1u);
    }
    c.nan += nan;
    c.inf += inf;
}

// One reduction per block answers both questions of the common case: the largest
// magnitude (sign bit cleared) is below the all-ones exponent iff the block holds no
// NaN or Inf, and is 0 iff every element is (+/-) zero. Blocks that do hold a special
// value (rare) are counted precisely. Magnitudes fit the signed type of the same
// width, whose max AVX2 has for every width (unsigned 64-bit max it lacks).
template <typename U, U kExp, U kMant>
PYAUDIT_MULTIVERSION void scan_ieee(const U* p, std::size_t n, Counts& c) {
    using S = std::make_signed_t<U>;
    constexpr U kAbs = static_cast<U>(kExp | kMant);
    constexpr std::size_t kBlock = 4096;
    U nonzero = 0;
    for (std::size_t start = 0; start < n; start += kBlock) {
        const std::size_t stop = std::min(n, start + kBlock);
        S top = 0;
        for (std::size_t i = start; i < stop; ++i) {
            const S m = static_cast<S>(p[i] & kAbs);
            top = m > top ? m : top;
        }
        if (static_cast<U>(top) >= kExp) count_special<U, kExp, kMant>(p + start, stop - start, c);
        nonzero = static_cast<U>(nonzero | static_cast<U>(top));
    }
    c.nonzero |= nonzero;
}

// Any dtype: is every byte zero? (Integers, bool, sub-byte floats.)
PYAUDIT_MULTIVERSION void scan_bytes(const unsigned char* p, std::size_t n, Counts& c) {
    std::uint64_t acc = 0;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; ++i) acc |= p[i];
    c.nonzero |= acc;
}

// FP8 E4M3 (fn): no Inf; NaN is S.1111.111 (the largest magnitude). Zero is S.0000.000.
PYAUDIT_MULTIVERSION void scan_e4m3(const unsigned char* p, std::size_t n, Counts& c) {
    constexpr std::size_t kBlock = 4096;
    unsigned nonzero = 0;
    for (std::size_t start = 0; start < n; start += kBlock) {
        const std::size_t stop = std::min(n, start + kBlock);
        unsigned char top = 0;
        for (std::size_t i = start; i < stop; ++i) {
            const auto m = static_cast<unsigned char>(p[i] & 0x7Fu);
            top = m > top ? m : top;
        }
        if (top == 0x7Fu) {
            std::uint64_t nan = 0;
            for (std::size_t i = start; i < stop; ++i) nan += (p[i] & 0x7Fu) == 0x7Fu;
            c.nan += nan;
        }
        nonzero |= top;
    }
    c.nonzero |= nonzero;
}

template <typename U>
const U* as(const unsigned char* data) {
    return reinterpret_cast<const U*>(data);  // the read buffer is aligned for any U
}

}  // namespace

void scan_elements(Dtype dtype, const unsigned char* data, std::size_t size, TensorDataStats& stats) {
    Counts c;
    switch (dtype) {
        case Dtype::F16:
            scan_ieee<std::uint16_t, 0x7C00, 0x03FF>(as<std::uint16_t>(data), size / 2, c);
            stats.checked_values = true;
            break;
        case Dtype::BF16:
            scan_ieee<std::uint16_t, 0x7F80, 0x007F>(as<std::uint16_t>(data), size / 2, c);
            stats.checked_values = true;
            break;
        case Dtype::F32:
        case Dtype::C64:  // two F32 parts per element
            scan_ieee<std::uint32_t, 0x7F800000u, 0x007FFFFFu>(as<std::uint32_t>(data), size / 4, c);
            stats.checked_values = true;
            break;
        case Dtype::F64:
            scan_ieee<std::uint64_t, 0x7FF0000000000000ull, 0x000FFFFFFFFFFFFFull>(
                as<std::uint64_t>(data), size / 8, c);
            stats.checked_values = true;
            break;
        case Dtype::F8_E5M2:
            scan_ieee<std::uint8_t, 0x7C, 0x03>(data, size, c);
            stats.checked_values = true;
            break;
        case Dtype::F8_E4M3:
            scan_e4m3(data, size, c);
            stats.checked_values = true;
            break;
        default:
            scan_bytes(data, size, c);
            break;
    }
    stats.nan += c.nan;
    stats.inf += c.inf;
    if (c.nonzero != 0) stats.all_zero = false;
}

namespace {

struct AlignedFree {
    void operator()(unsigned char* p) const noexcept { std::free(p); }
};

// Exactly `size` bytes at `offset`: a short read means the file shrank under us.
bool pread_exact(int fd, unsigned char* buffer, std::size_t size, std::uint64_t offset) {
    const long long got = pread_full(fd, buffer, size, offset);
    if (got >= 0 && static_cast<std::size_t>(got) < size) errno = EIO;
    return got >= 0 && static_cast<std::size_t>(got) == size;
}

std::size_t element_bytes(Dtype dtype) {
    const std::uint32_t bits = dtype_bits(dtype);
    // Sub-byte dtypes are scanned bytewise: any whole number of bytes will do.
    return bits >= 8 ? bits / 8 : 1;
}

}  // namespace

FileDataResult check_file_data(const std::string& path) {
    FileDataResult result;
    result.header = read_header_file(path);
    if (!result.header.ok()) return result;
    result.stats.resize(result.header.tensors.size());
    const int raw = open_read_only(path.c_str());
    if (raw < 0) {
        result.error = "cannot open: " + std::string(std::strerror(errno));
        return result;
    }
    const FileDescriptor fd(raw);
    advise_sequential(fd.get());
    std::unique_ptr<unsigned char, AlignedFree> buffer(
        static_cast<unsigned char*>(std::aligned_alloc(64, kDataBuffer)));
    if (!buffer) {
        result.error = "out of memory for the read buffer";
        return result;
    }
    const std::uint64_t data_start = kLengthPrefix + result.header.header_size;
    // In file order, so the reads run forward through the file.
    std::vector<std::size_t> order(result.header.tensors.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return result.header.tensors[a].begin < result.header.tensors[b].begin;
    });
    for (const std::size_t index : order) {
        const TensorRecord& t = result.header.tensors[index];
        TensorDataStats& stats = result.stats[index];
        const std::uint64_t size = t.end - t.begin;
        if (size == 0) {
            stats.all_zero = false;  // nothing to be zero: empty tensors are another finding
            continue;
        }
        const std::size_t elem = element_bytes(t.dtype);
        const std::size_t step = kDataBuffer - kDataBuffer % elem;
        for (std::uint64_t done = 0; done < size;) {
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(step, size - done));
            if (!pread_exact(fd.get(), buffer.get(), n, data_start + t.begin + done)) {
                result.error = "cannot read tensor data of '" + std::string(result.header.name(t)) +
                               "': " + std::strerror(errno);
                return result;
            }
            scan_elements(t.dtype, buffer.get(), n, stats);
            done += n;
            result.bytes_read += n;
        }
    }
    return result;
}

std::vector<FileDataResult> check_files_data(const std::vector<std::string>& paths, unsigned jobs) {
    std::vector<FileDataResult> results(paths.size());
    parallel_for(paths.size(), jobs == 0 ? default_jobs() : jobs,
                 [&](std::size_t i) { results[i] = check_file_data(paths[i]); });
    return results;
}

}  // namespace pyaudit
