#include "placeholders.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

// By path, with nftw (32 directories open at most, whatever the depth): what the walk below
// could not finish.
int remove_by_path(const std::string& root) {
    first_failure = 0;
    // FTW_PHYS: links not followed; FTW_MOUNT: one filesystem; FTW_DEPTH: entries first.
    if (::nftw(root.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 &&
        first_failure == 0) {
        first_failure = errno != 0 ? errno : EIO;
    }
    return first_failure;
}

// Directories the walk below keeps open at once (one a level); deeper, it leaves the rest
// to remove_by_path.
constexpr int kOpenLevels = 64;

struct Entry {
    std::string name;
    unsigned char type;  // d_type (DT_UNKNOWN where the filesystem does not say)
};

void note(int& failure, int error) {
    if (error != 0 && error != ENOENT && failure == 0) failure = error;
}

// Empties the directory open at `fd` (closed here): files and links unlinked where the
// directory entry says what they are (nftw stats every entry first: a system call each, a
// third of the time on a mirror of thousands of empty files), directories of the same
// filesystem emptied and removed. The first failure is noted; the walk goes on.
void empty_dir(int fd, dev_t device, int level, int& failure) {
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
        note(failure, errno);
        ::close(fd);
        return;
    }
    // Read whole before anything is removed: entries removed while a directory is read may
    // make the reading skip others, on some filesystems.
    std::vector<Entry> entries;
    while (true) {
        errno = 0;
        const struct dirent* e = ::readdir(dir);
        if (e == nullptr) {
            note(failure, errno);
            break;
        }
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        entries.push_back({e->d_name, e->d_type});
    }
    int at = ::dirfd(dir);
    for (const Entry& entry : entries) {
        const char* name = entry.name.c_str();
        bool is_dir = entry.type == DT_DIR;
        if (entry.type == DT_UNKNOWN) {
            struct stat st;
            if (::fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                note(failure, errno);
                continue;
            }
            is_dir = S_ISDIR(st.st_mode);
        }
        if (!is_dir) {
            if (::unlinkat(at, name, 0) != 0) note(failure, errno);
            continue;
        }
        if (level >= kOpenLevels) {
            note(failure, EMFILE);  // (left for remove_by_path)
            continue;
        }
        int sub = ::openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            note(failure, errno);
            continue;
        }
        struct stat st;
        if (::fstat(sub, &st) != 0 || st.st_dev != device) {  // a mount point: not entered
            note(failure, EXDEV);
            ::close(sub);
            continue;
        }
        empty_dir(sub, device, level + 1, failure);
        if (::unlinkat(at, name, AT_REMOVEDIR) != 0) note(failure, errno);
    }
    ::closedir(dir);
}

}  // namespace

int remove_tree(const std::string& root) {
    struct stat st;
    if (::lstat(root.c_str(), &st) != 0) return errno;
    if (!S_ISDIR(st.st_mode)) return ::unlink(root.c_str()) == 0 ? 0 : errno;
    int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int failure = 0;
    if (fd < 0) {
        failure = errno;
    } else {
        empty_dir(fd, st.st_dev, 1, failure);
        if (failure == 0 && ::rmdir(root.c_str()) != 0) failure = errno;
    }
    // Whatever the walk could not do (too deep, a directory it could not open, a mount point
    // below), tried again and reported as nftw finds it.
    return failure == 0 ? 0 : remove_by_path(root);
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

std::vector<PlaceholderError> make_directories(const std::string& root,
                                               const std::vector<std::string>& names) {
    std::vector<PlaceholderError> errors;
    std::unordered_set<std::string> made;  // (make_parents': a file there passes as made)
    std::unordered_set<std::string> dirs;  // names seen to be directories
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string& name = names[i];
        if (!safe_name(name)) {
            errors.push_back({i, EINVAL});
            continue;
        }
        if (dirs.count(name) != 0) continue;
        std::size_t slash = name.rfind('/');
        std::string_view parent = slash == std::string::npos
                                      ? std::string_view{}
                                      : std::string_view(name).substr(0, slash);
        int error = make_parents(root, parent, made);
        if (error == 0) {
            std::string path = root + "/" + name;
            if (::mkdir(path.c_str(), 0700) != 0) {
                error = errno;
                struct stat st;
                // (there already: a directory is what was asked for, anything else is not)
                if (error == EEXIST) {
                    error = ::stat(path.c_str(), &st) != 0 ? errno
                            : S_ISDIR(st.st_mode)        ? 0
                                                         : ENOTDIR;
                }
            }
        }
        if (error == 0) {
            dirs.insert(name);
        } else {
            errors.push_back({i, error});
        }
    }
    return errors;
}

}  // namespace pyaudit
