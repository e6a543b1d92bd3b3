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
#include <vector>

#include "file_io.hpp"

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

ParsedHeader io_failure(std::string message) {
    ParsedHeader out;
    out.issue.rule = Rule::io_error;
    out.issue.message = std::move(message);
    return out;
}

}  // namespace

ParsedHeader read_header_file(const std::string& path) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    const int raw_fd = open_read_only(path.c_str());
    if (raw_fd < 0) return io_failure("cannot open: " + std::string(std::strerror(errno)));
    const FileDescriptor fd(raw_fd);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return io_failure("cannot stat: " + std::string(std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return io_failure("not a regular file");
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);

    // Reused across files: reads land in memory already mapped and in cache.
    thread_local std::vector<unsigned char> buffer(kColdRead);
    const std::size_t first_read = start_is_cached(fd.get()) ? kFirstRead : kColdRead;
    const std::size_t want = file_size < first_read ? static_cast<std::size_t>(file_size) : first_read;
    const long long got = pread_full(fd.get(), buffer.data(), want, 0);
    if (got < 0) return io_failure("cannot read: " + std::string(std::strerror(errno)));
    if (static_cast<std::size_t>(got) < want) return io_failure("the file shrank while being read");

    std::uint64_t needed = 0;
    ParsedHeader out = parse_header_prefix(buffer.data(), static_cast<std::size_t>(got), file_size, &needed);
    if (needed == 0) return out;

    // The header is longer than the first read: read exactly the rest of it.
    // parse_header_prefix has checked that it fits in the file, so no buffer is
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
        return parse_header_prefix(buffer.data(), total, file_size);
    }
    out.text.resize(static_cast<std::size_t>(out.header_size));
    const std::size_t have = rest_from - kLengthPrefix;
    std::memcpy(out.text.data(), buffer.data() + kLengthPrefix, have);
    const std::size_t rest = out.text.size() - have;
    auto* tail = reinterpret_cast<unsigned char*>(out.text.data() + have);
    const long long more = pread_full(fd.get(), tail, rest, rest_from);
    if (more < 0) return io_failure("cannot read: " + std::string(std::strerror(errno)));
    if (static_cast<std::size_t>(more) < rest) return io_failure("the file shrank while being read");
    parse_header_text(out);
    return out;
}

}  // namespace pyaudit
