#include "header_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "file_io.hpp"
#include "hash.hpp"

namespace pyaudit {
namespace {

// cachestat(2), Linux 6.5+: how many pages of a range are in the page cache,
// asked without reading or touching them. The syscall number is shared by the
// architectures on the generic table.
#if defined(__NR_cachestat)
constexpr long kCachestat = __NR_cachestat;
#elif defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__) || defined(__i386__) || \
                             defined(__arm__) || defined(__riscv) || defined(__loongarch__))
constexpr long kCachestat = 451;
#else
constexpr long kCachestat = -1;
#endif

std::atomic<bool> g_cachestat_works{true};

// True when the first page of the file is known to be cached.
bool start_is_cached(int fd) noexcept {
#if defined(__linux__)
    if (kCachestat < 0 || !g_cachestat_works.load(std::memory_order_relaxed)) return false;
    struct Range {
        std::uint64_t off, len;
    } range{0, kFirstRead};
    struct Stat {
        std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
    } stat{};
    if (::syscall(kCachestat, fd, &range, &stat, 0) != 0) {
        if (errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP || errno == EPERM) {
            g_cachestat_works.store(false, std::memory_order_relaxed);
        }
        return false;
    }
    return stat.nr_cache > 0;
#else
    (void)fd;
    return false;
#endif
}

std::shared_ptr<const ParsedHeader> io_failure(std::string message) {
    auto out = std::make_shared<ParsedHeader>();
    out->issue.rule = Rule::io_error;
    out->issue.message = std::move(message);
    return out;
}

// The result for a file whose first `size` bytes (all of its header, or an error
// already decided by them) are in `data`: from the cache when an equal header of a
// file of the same size was parsed before, else parsed (and, if valid, cached).
std::shared_ptr<const ParsedHeader> finish(const unsigned char* data, std::size_t size,
                                           std::uint64_t file_size, HeaderCache* cache) {
    if (cache == nullptr) {
        return std::make_shared<ParsedHeader>(parse_header_prefix(data, size, file_size));
    }
    if (size >= kLengthPrefix) {
        const std::uint64_t n = read_length_prefix(data);
        if (n <= kMaxHeaderSize && n <= size - kLengthPrefix) {
            const std::string_view text(reinterpret_cast<const char*>(data) + kLengthPrefix,
                                        static_cast<std::size_t>(n));
            const std::uint64_t digest = hash_bytes(text);
            if (auto hit = cache->find(digest, text, file_size)) return hit;
            auto parsed = std::make_shared<ParsedHeader>(parse_header_prefix(data, size, file_size));
            parsed->digest = digest;
            parsed->has_digest = true;
            if (parsed->ok()) cache->add(parsed);
            return parsed;
        }
    }
    auto parsed = std::make_shared<ParsedHeader>(parse_header_prefix(data, size, file_size));
    parsed->digest = hash_bytes(parsed->text);
    parsed->has_digest = true;
    return parsed;
}

}  // namespace

std::shared_ptr<const ParsedHeader> HeaderCache::find(std::uint64_t digest, std::string_view text,
                                                      std::uint64_t file_size) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = by_digest_.find(digest);
    if (it == by_digest_.end()) return nullptr;
    for (const auto& held : it->second) {
        // Equal bytes and file size: the parse (a pure function of them) is equal.
        if (held->file_size == file_size && held->text == text) return held;
    }
    return nullptr;
}

void HeaderCache::add(std::shared_ptr<const ParsedHeader> parsed) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto& held = by_digest_[parsed->digest];
    if (held.size() < 4) held.push_back(std::move(parsed));
}

bool cachestat_supported() noexcept {
    return kCachestat >= 0 && g_cachestat_works.load(std::memory_order_relaxed);
}

ParsedHeader read_header_file(const std::string& path) {
    const std::shared_ptr<const ParsedHeader> parsed = read_header_shared(path, nullptr);
    // Without a cache the result is made here and held nowhere else: moved out, not
    // copied (a header can be 100 MB).
    return std::move(const_cast<ParsedHeader&>(*parsed));
}

std::shared_ptr<const ParsedHeader> read_header_shared(const std::string& path, HeaderCache* cache,
                                                       bool* from_page_cache) {
    if (from_page_cache != nullptr) *from_page_cache = false;
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    const int raw_fd = open_read_only(path.c_str());
    if (raw_fd < 0) return io_failure("cannot open: " + std::string(std::strerror(errno)));
    const FileDescriptor fd(raw_fd);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return io_failure("cannot stat: " + std::string(std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return io_failure("not a regular file");
    const auto file_size = static_cast<std::uint64_t>(st.st_size);

    // Reused across files: reads land in memory already mapped and in cache.
    thread_local std::vector<unsigned char> buffer(kColdRead);
    const bool cached = start_is_cached(fd.get());
    if (from_page_cache != nullptr) *from_page_cache = cached;
    // Readahead happens on a page cache miss: advice against it only when reads may miss.
    if (!cached) advise_no_readahead(fd.get());
    const std::size_t first_read = cached ? kFirstRead : kColdRead;
    const std::size_t want = file_size < first_read ? static_cast<std::size_t>(file_size) : first_read;
    const long long got = pread_full(fd.get(), buffer.data(), want, 0);
    if (got < 0) return io_failure("cannot read: " + std::string(std::strerror(errno)));
    if (static_cast<std::size_t>(got) < want) return io_failure("the file shrank while being read");

    // Does the first read hold the whole header (or decide what is wrong with it)?
    const auto first_size = static_cast<std::size_t>(got);
    const std::uint64_t needed = header_extent(buffer.data(), first_size, file_size);
    if (needed <= first_size) return finish(buffer.data(), first_size, file_size, cache);

    // The header is longer than the first read: read exactly the rest of it.
    // header_extent has checked that it fits in the file, so no buffer is
    // ever larger than the file. Up to kKeepBuffer the reused buffer grows to
    // hold it (the header is then copied once, into its text); a larger header
    // is read straight into its text, and the buffer is not kept that large.
    const auto total = static_cast<std::size_t>(needed);
    const auto rest_from = static_cast<std::size_t>(got);
    if (total <= kKeepBuffer) {
        if (buffer.size() < total) buffer.resize(total);
        const long long more = pread_full(fd.get(), buffer.data() + rest_from, total - rest_from, rest_from);
        if (more < 0) return io_failure("cannot read: " + std::string(std::strerror(errno)));
        if (static_cast<std::size_t>(more) < total - rest_from) return io_failure("the file shrank while being read");
        return finish(buffer.data(), total, file_size, cache);
    }
    auto out = std::make_shared<ParsedHeader>();
    out->file_size = file_size;
    out->header_size = needed - kLengthPrefix;
    out->text.resize(static_cast<std::size_t>(out->header_size));
    const std::size_t have = rest_from - kLengthPrefix;
    std::memcpy(out->text.data(), buffer.data() + kLengthPrefix, have);
    const std::size_t rest = out->text.size() - have;
    auto* tail = reinterpret_cast<unsigned char*>(out->text.data() + have);
    const long long more = pread_full(fd.get(), tail, rest, rest_from);
    if (more < 0) return io_failure("cannot read: " + std::string(std::strerror(errno)));
    if (static_cast<std::size_t>(more) < rest) return io_failure("the file shrank while being read");
    parse_header_text(*out);
    if (cache != nullptr) {
        out->digest = hash_bytes(out->text);
        out->has_digest = true;
    }
    return out;
}

}  // namespace pyaudit
