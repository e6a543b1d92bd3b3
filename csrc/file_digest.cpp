#include "file_digest.hpp"

#include <sys/stat.h>

#include <string_view>

#include "batch.hpp"
#include "file_io.hpp"
#include "hash.hpp"
#include "parallel.hpp"

namespace pyaudit {
namespace {

constexpr std::size_t kKeep = 1024 * 1024;  // buffers up to this size are reused per thread

}  // namespace

FileDigest digest_file(const std::string& path, std::uint64_t max_size) {
    FileDigest out;
    const FileDescriptor fd(open_read_only(path.c_str()));
    if (fd.get() < 0) return out;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) return out;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size > max_size) return out;
    thread_local std::vector<unsigned char> buffer;
    // One byte more than the size: a file that grew since the fstat is seen to.
    buffer.resize(static_cast<std::size_t>(size) + 1);
    const long long n = pread_full(fd.get(), buffer.data(), buffer.size(), 0);
    if (n >= 0 && static_cast<std::uint64_t>(n) == size) {
        out.ok = true;
        out.size = size;
        out.digest = hash_bytes(std::string_view(reinterpret_cast<const char*>(buffer.data()), size));
    }
    if (buffer.capacity() > kKeep) std::vector<unsigned char>().swap(buffer);
    return out;
}

std::vector<FileDigest> digest_files(const std::vector<std::string>& paths, std::uint64_t max_size,
                                     unsigned jobs) {
    std::vector<FileDigest> results(paths.size());
    parallel_for(paths.size(), jobs == 0 ? default_jobs() : jobs,
                 [&](std::size_t i) { results[i] = digest_file(paths[i], max_size); });
    return results;
}

}  // namespace pyaudit
