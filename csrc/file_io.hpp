// Plain file I/O shared by the header reader and the data scan: an owned descriptor,
// an open that cannot block, and a pread that retries short reads.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace pyaudit {

class FileDescriptor {
public:
    explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const noexcept { return fd_; }

private:
    int fd_;
};

// Read-only; O_NONBLOCK so that opening a FIFO does not wait for a writer.
inline int open_read_only(const char* path) noexcept {
    return ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
}

// Read-ahead advice: off for header reads that may miss the page cache (read-ahead would pull
// in tensor data), sequential for the data scan. posix_fadvise where the platform has it
// (Linux, the BSDs); macOS has only read-ahead on or off (F_RDAHEAD); elsewhere, no advice.
inline void advise_no_readahead(int fd) noexcept {
#if defined(POSIX_FADV_RANDOM)
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
#elif defined(F_RDAHEAD)
    (void)::fcntl(fd, F_RDAHEAD, 0);
#else
    (void)fd;
#endif
}

inline void advise_sequential(int fd) noexcept {
#if defined(POSIX_FADV_SEQUENTIAL)
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#elif defined(F_RDAHEAD)
    (void)::fcntl(fd, F_RDAHEAD, 1);
#else
    (void)fd;
#endif
}

// Reads up to `size` bytes at `offset`, retrying short reads and EINTR.
// Returns the bytes read (fewer only at the end of the file), or -1 with errno set.
inline long long pread_full(int fd, unsigned char* buffer, std::size_t size, std::uint64_t offset) {
    std::size_t done = 0;
    while (done < size) {
        const ssize_t n = ::pread(fd, buffer + done, size - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    return static_cast<long long>(done);
}

}  // namespace pyaudit
