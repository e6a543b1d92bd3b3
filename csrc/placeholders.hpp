// Placeholder files: a tree of sparse files of given sizes below a root directory (the
// mirror of a remote listing, whose files are written later, or never), made and removed
// without Python: the caller releases the GIL around both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pyaudit {

struct PlaceholderError {
    std::size_t index;  // of the file in the request
    int error;          // errno, or EINVAL for a name no directory can hold
};

// Makes root/name for each (name, size): its missing parent directories (0700), then the
// file itself (created or emptied, 0600) extended to `size` bytes with no data written.
// Names are relative, '/'-separated, with no empty, "." or ".." component. Never throws
// for a file: what could not be made is returned, in request order.
std::vector<PlaceholderError> make_placeholders(
    const std::string& root, const std::vector<std::pair<std::string, std::uint64_t>>& files);

// Makes root/name for each name, a directory (0700), and its missing parents; a name that
// is there as a directory already is made. Names as for make_placeholders. What could not
// be made is returned, in request order (ENOTDIR: the name, or one above it, is a file).
std::vector<PlaceholderError> make_directories(const std::string& root,
                                               const std::vector<std::string>& names);

// Removes `root` and everything below it, depth first, never following a symbolic link (a
// link is removed, not what it names) nor crossing into another filesystem. Goes on past
// what cannot be removed: 0, or the errno of the first failure (ENOENT: no `root`).
int remove_tree(const std::string& root);

}  // namespace pyaudit
