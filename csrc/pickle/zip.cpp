#include "pickle/zip.hpp"

#include <algorithm>
#include <utility>

#include "checked.hpp"

namespace pyaudit::pickle {
namespace {

constexpr std::uint32_t kEndSignature = 0x06054b50;
constexpr std::uint32_t kEnd64Signature = 0x06064b50;
constexpr std::uint32_t kLocator64Signature = 0x07064b50;
constexpr std::uint32_t kCentralSignature = 0x02014b50;
constexpr std::uint32_t kLocalSignature = 0x04034b50;
constexpr std::size_t kEndSize = 22;
constexpr std::size_t kLocatorSize = 20;
constexpr std::size_t kEnd64Size = 56;
constexpr std::size_t kCentralSize = 46;
constexpr std::size_t kMaxComment = 0xFFFF;

std::uint64_t le(const unsigned char* p, std::size_t n) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
}

ZipResult status(ZipStatus s, std::string message) { return ZipResult{s, std::move(message)}; }

}  // namespace

bool starts_like_zip(const unsigned char* first4, std::size_t size) noexcept {
    if (size < 4) return false;
    const auto sig = static_cast<std::uint32_t>(le(first4, 4));
    return sig == kLocalSignature || sig == kEndSignature;
}

ZipResult read_zip_directory(Source& source, ZipDirectory& out) {
    const std::uint64_t file_size = source.size();
    if (file_size < kEndSize) return status(ZipStatus::truncated, "the zip archive is shorter than its end record");
    // The end record closes the file when the archive has no comment (torch writes
    // none): read it and the zip64 locator before it. Only when it is not there, the
    // last 22 + 65,535 bytes (the longest comment) are searched.
    std::vector<unsigned char> tail;
    std::size_t end_at = 0;
    bool found = false;
    for (const std::uint64_t window : {std::uint64_t{kEndSize + kLocatorSize},
                                       std::uint64_t{kEndSize + kMaxComment + kLocatorSize}}) {
        const std::uint64_t tail_size = std::min<std::uint64_t>(file_size, window);
        tail.resize(static_cast<std::size_t>(tail_size));
        if (!source.read(file_size - tail_size, tail.size(), tail.data())) {
            return status(ZipStatus::io_error, source.why());
        }
        for (std::size_t i = tail.size() - kEndSize + 1; i-- > 0;) {
            if (le(&tail[i], 4) == kEndSignature &&
                i + kEndSize + static_cast<std::size_t>(le(&tail[i + 20], 2)) == tail.size()) {
                end_at = i;
                found = true;
                break;
            }
        }
        if (found || tail_size == file_size) break;
    }
    if (!found) {
        return status(ZipStatus::truncated,
                      "no end-of-central-directory record: the zip archive is truncated or not a zip");
    }
    const unsigned char* end = &tail[end_at];
    if (le(end + 4, 2) != 0 || le(end + 6, 2) != 0) {
        return status(ZipStatus::unsupported, "a multi-disk zip archive");
    }
    std::uint64_t count = le(end + 10, 2);
    std::uint64_t dir_size = le(end + 12, 4);
    std::uint64_t dir_offset = le(end + 16, 4);
    if (count == 0xFFFF || dir_size == 0xFFFFFFFFu || dir_offset == 0xFFFFFFFFu) {
        // zip64: the locator sits just before the end record and points at the zip64 end record.
        if (end_at < kLocatorSize || le(end - kLocatorSize, 4) != kLocator64Signature) {
            return status(ZipStatus::malformed, "a zip64 archive without its zip64 end locator");
        }
        const std::uint64_t end64_at = le(end - kLocatorSize + 8, 8);
        std::uint64_t end64_end = 0;
        if (!checked_add(end64_at, kEnd64Size, end64_end) || end64_end > file_size) {
            return status(ZipStatus::truncated, "the zip64 end record lies past the end of the file");
        }
        unsigned char e64[kEnd64Size];
        if (!source.read(end64_at, kEnd64Size, e64)) return status(ZipStatus::io_error, source.why());
        if (le(e64, 4) != kEnd64Signature) return status(ZipStatus::malformed, "the zip64 end record has a bad signature");
        count = le(e64 + 32, 8);
        dir_size = le(e64 + 40, 8);
        dir_offset = le(e64 + 48, 8);
    }
    std::uint64_t dir_end = 0;
    if (!checked_add(dir_offset, dir_size, dir_end) || dir_end > file_size) {
        return status(ZipStatus::truncated, "the zip central directory lies past the end of the file");
    }
    if (dir_size > kMaxCentralDirectory) {
        return status(ZipStatus::unsupported, "the zip central directory is larger than 256 MiB");
    }
    if (count > dir_size / kCentralSize) {
        return status(ZipStatus::malformed, "the zip end record claims more entries than its directory can hold");
    }
    std::vector<unsigned char> dir(static_cast<std::size_t>(dir_size));
    if (!source.read(dir_offset, dir.size(), dir.data())) return status(ZipStatus::io_error, source.why());
    out.directory_offset = dir_offset;
    out.directory_size = dir_size;
    out.entries.clear();
    out.entries.reserve(static_cast<std::size_t>(count));
    std::size_t at = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        if (dir.size() - at < kCentralSize || le(&dir[at], 4) != kCentralSignature) {
            return status(ZipStatus::malformed, "zip central directory entry " + std::to_string(i) + " is malformed");
        }
        const unsigned char* e = &dir[at];
        ZipEntry entry;
        entry.flags = static_cast<std::uint16_t>(le(e + 8, 2));
        entry.method = static_cast<std::uint16_t>(le(e + 10, 2));
        entry.compressed = le(e + 20, 4);
        entry.uncompressed = le(e + 24, 4);
        const auto name_len = static_cast<std::size_t>(le(e + 28, 2));
        const auto extra_len = static_cast<std::size_t>(le(e + 30, 2));
        const auto comment_len = static_cast<std::size_t>(le(e + 32, 2));
        entry.local_offset = le(e + 42, 4);
        const std::size_t entry_size = kCentralSize + name_len + extra_len + comment_len;
        if (dir.size() - at < entry_size) {
            return status(ZipStatus::malformed, "zip central directory entry " + std::to_string(i) + " runs past the directory");
        }
        entry.name.assign(reinterpret_cast<const char*>(e + kCentralSize), name_len);
        // zip64 extra field: the 64-bit values of the fields saturated above, in order.
        const unsigned char* x = e + kCentralSize + name_len;
        std::size_t xa = 0;
        while (extra_len - xa >= 4) {
            const auto id = le(x + xa, 2);
            const auto len = static_cast<std::size_t>(le(x + xa + 2, 2));
            if (extra_len - xa - 4 < len) break;
            if (id == 0x0001) {
                std::size_t f = xa + 4;
                const std::size_t f_end = f + len;
                auto take = [&](std::uint64_t& field) {
                    if (field != 0xFFFFFFFFu) return true;
                    if (f_end - f < 8) return false;
                    field = le(x + f, 8);
                    f += 8;
                    return true;
                };
                if (!take(entry.uncompressed) || !take(entry.compressed) || !take(entry.local_offset)) {
                    return status(ZipStatus::malformed, "the zip64 field of '" + entry.name + "' is too short");
                }
            }
            xa += 4 + len;
        }
        out.entries.push_back(std::move(entry));
        at += entry_size;
    }
    // Every record inside the file, before the directory, and apart from the others.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;  // [begin, end), index
    spans.reserve(out.entries.size());
    for (std::size_t i = 0; i < out.entries.size(); ++i) {
        const ZipEntry& e = out.entries[i];
        std::uint64_t span_end = 0;
        if (!checked_add(e.local_offset, kLocalHeader + e.name.size(), span_end) ||
            !checked_add(span_end, e.compressed, span_end)) {
            return status(ZipStatus::malformed, "zip record '" + e.name + "' has an impossible size");
        }
        if (span_end > dir_offset) {
            return status(span_end > file_size ? ZipStatus::truncated : ZipStatus::malformed,
                          "zip record '" + e.name + "' runs past " +
                              (span_end > file_size ? std::string("the end of the file")
                                                    : std::string("the start of the central directory")));
        }
        spans.emplace_back(e.local_offset, i);
    }
    std::sort(spans.begin(), spans.end());
    std::uint64_t previous_end = 0;
    std::size_t previous = 0;
    for (std::size_t k = 0; k < spans.size(); ++k) {
        const ZipEntry& e = out.entries[spans[k].second];
        if (k > 0 && e.local_offset < previous_end) {
            return status(ZipStatus::overlap, "zip records '" + out.entries[previous].name + "' and '" + e.name +
                                                  "' overlap");
        }
        previous_end = e.local_offset + kLocalHeader + e.name.size() + e.compressed;
        previous = spans[k].second;
    }
    return {};
}

ZipResult record_data_offset(Source& source, const ZipEntry& entry, std::uint64_t& data_offset) {
    unsigned char local[kLocalHeader];
    if (!source.read(entry.local_offset, kLocalHeader, local)) return status(ZipStatus::truncated, source.why());
    if (le(local, 4) != kLocalSignature) {
        return status(ZipStatus::malformed, "zip record '" + entry.name + "' has no local header where the directory says");
    }
    const std::uint64_t name_len = le(local + 26, 2);
    const std::uint64_t extra_len = le(local + 28, 2);
    std::uint64_t end = entry.local_offset + kLocalHeader + name_len + extra_len;  // <= 2^64: offsets < file size
    data_offset = end;
    if (!checked_add(end, entry.compressed, end) || end > source.size()) {
        return status(ZipStatus::truncated, "zip record '" + entry.name + "' runs past the end of the file");
    }
    return {};
}

}  // namespace pyaudit::pickle
