#include "placeholders.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <string_view>
#include <unordered_set>

namespace pyaudit {
namespace {

bool safe_name(std::string_view name) {
    if (name.empty() || name.front() == '/' || name.find('\0') != std::string_view::npos) {
        return false;
    }
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t end = name.find('/', start);
        if (end == std::string_view::npos) end = name.size();
        std::string_view part = name.substr(start, end - start);
        if (part.empty() || part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

// mkdir -p of root/parent, each directory once per call; 0 or an errno.
int make_parents(const std::string& root, std::string_view parent,
                 std::unordered_set<std::string>& made) {
    if (parent.empty() || made.count(std::string(parent)) != 0) return 0;
    std::size_t at = 0;
    while (true) {
        std::size_t end = parent.find('/', at);
        std::string_view upto = parent.substr(0, end == std::string_view::npos ? parent.size() : end);
        std::string key(upto);
        if (made.count(key) == 0) {
            std::string path = root + "/" + key;
            if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return errno;
            made.insert(std::move(key));
        }
        if (end == std::string_view::npos) return 0;
        at = end + 1;
    }
}

int make_one(const std::string& root, const std::string& name, std::uint64_t size) {
    if (size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) return EFBIG;
    std::string path = root + "/" + name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) return errno;
    int error = 0;
    if (size > 0 && ::ftruncate(fd, static_cast<off_t>(size)) != 0) error = errno;
    if (::close(fd) != 0 && error == 0) error = errno;
    return error;
}

// nftw's callback takes no state of the caller's: the first failure of this thread's walk.
thread_local int first_failure = 0;

int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
    // FTW_DNR: a directory that could not be read (its entries stay; rmdir then fails)
    int failed = 0;
    if (type == FTW_DP || type == FTW_DNR) {
        if (::rmdir(path) != 0) failed = errno;
    } else if (::unlink(path) != 0) {
        failed = errno;
    }
    if (failed != 0 && failed != ENOENT && first_failure == 0) first_failure = failed;
    return 0;  // on to the next entry
}

}  // namespace

int remove_tree(const std::string& root) {
    struct stat st;
    if (::lstat(root.c_str(), &st) != 0) return errno;
    first_failure = 0;
    // FTW_PHYS: links not followed; FTW_MOUNT: one filesystem; FTW_DEPTH: entries first.
    if (::nftw(root.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 &&
        first_failure == 0) {
        first_failure = errno != 0 ? errno : EIO;
    }
    return first_failure;
}

std::vector<PlaceholderError> make_placeholders(
    const std::string& root, const std::vector<std::pair<std::string, std::uint64_t>>& files) {
    std::vector<PlaceholderError> errors;
    std::unordered_set<std::string> made;
    for (std::size_t i = 0; i < files.size(); ++i) {
        const auto& [name, size] = files[i];
        if (!safe_name(name)) {
            errors.push_back({i, EINVAL});
            continue;
        }
        std::size_t slash = name.rfind('/');
        std::string_view parent = slash == std::string::npos
                                      ? std::string_view{}
                                      : std::string_view(name).substr(0, slash);
        int error = make_parents(root, parent, made);
        if (error == 0) error = make_one(root, name, size);
        if (error != 0) errors.push_back({i, error});
    }
    return errors;
}

}  // namespace pyaudit
