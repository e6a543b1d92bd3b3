// Where a reader's bytes come from: a file (pread, bounded reads) or a buffer (tests,
// the fuzz harness). Readers ask for ranges; nothing is mapped and nothing is read
// that was not asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "file_io.hpp"

namespace pyaudit::pickle {

class Source {
public:
    virtual ~Source() = default;
    virtual std::uint64_t size() const noexcept = 0;
    // Reads exactly n bytes at offset into out; false (with why()) when it cannot.
    virtual bool read(std::uint64_t offset, std::size_t n, unsigned char* out) = 0;
    const std::string& why() const noexcept { return why_; }
    std::uint64_t bytes_read() const noexcept { return bytes_read_; }

protected:
    std::string why_;
    std::uint64_t bytes_read_ = 0;
};

class BufferSource final : public Source {
public:
    BufferSource(const unsigned char* data, std::size_t size) noexcept : data_(data), size_(size) {}
    std::uint64_t size() const noexcept override { return size_; }
    bool read(std::uint64_t offset, std::size_t n, unsigned char* out) override {
        if (offset > size_ || n > size_ - offset) {
            why_ = "read past the end of the file";
            return false;
        }
        if (n > 0) std::memcpy(out, data_ + offset, n);
        bytes_read_ += n;
        return true;
    }

private:
    const unsigned char* data_;
    std::size_t size_;
};

class FileSource final : public Source {
public:
    FileSource(int fd, std::uint64_t size) noexcept : fd_(fd), size_(size) {}
    std::uint64_t size() const noexcept override { return size_; }
    bool read(std::uint64_t offset, std::size_t n, unsigned char* out) override {
        if (offset > size_ || n > size_ - offset) {
            why_ = "read past the end of the file";
            return false;
        }
        const long long got = pread_full(fd_, out, n, offset);
        if (got < 0) {
            why_ = "cannot read: " + std::string(std::strerror(errno));
            return false;
        }
        if (static_cast<std::size_t>(got) < n) {
            why_ = "the file shrank while being read";
            return false;
        }
        bytes_read_ += n;
        return true;
    }

private:
    int fd_;
    std::uint64_t size_;
};

}  // namespace pyaudit::pickle
