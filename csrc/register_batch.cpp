// Python face of batch reads: read_headers, digest_files, and the sweep's read-ahead
// (BatchRead: both of those, and optionally the headers held against a TensorSpecs
// table, on native threads that never take the GIL). One conversion to Python each
// for the headers and the digests, shared by the calls and the read-ahead.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "batch.hpp"
#include "bindings.hpp"
#include "file_digest.hpp"
#include "header_file.hpp"
#include "header_object.hpp"
#include "placeholders.hpp"
#include "tensor_specs.hpp"

namespace py = pybind11;

namespace pyaudit {

namespace {

// A tree of placeholders or directories made with the GIL released (the caller's other
// threads run meanwhile): [(index, errno)] of the entries that could not be made.
template <typename Make, typename Entries>
py::list without_gil(Make make, const std::string& root, const Entries& entries) {
    std::vector<PlaceholderError> errors;
    {
        py::gil_scoped_release release;
        errors = make(root, entries);
    }
    py::list out;
    for (const auto& e : errors) out.append(py::make_tuple(e.index, e.error));
    return out;
}

// Header objects for the paths read, in order.
py::list header_list(const std::vector<std::string>& paths,
                     const std::vector<std::shared_ptr<const ParsedHeader>>& parsed) {
    py::list out(parsed.size());
    for (std::size_t i = 0; i < parsed.size(); ++i) {
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), py::cast(Header(paths[i], parsed[i])).release().ptr());
    }
    return out;
}

// (size, digest) for each file read whole, None for the others.
py::list digest_list(const std::vector<FileDigest>& digests) {
    py::list out(digests.size());
    for (std::size_t i = 0; i < digests.size(); ++i) {
        py::object item = digests[i].ok ? py::object(py::make_tuple(digests[i].size, digests[i].digest))
                                        : py::object(py::none());
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), item.release().ptr());
    }
    return out;
}

// Started on construction, collected by result(): a sweep audits one batch in Python
// while the next is read, with no Python thread (whose every return from a blocking
// call would queue for the GIL behind the audit).
class BatchRead {
public:
    BatchRead(std::vector<std::string> header_paths, std::vector<std::string> file_paths,
              std::uint64_t max_size, unsigned jobs, std::optional<py::object> specs,
              std::vector<std::int64_t> groups, std::vector<std::size_t> spans)
        : header_paths_(std::move(header_paths)),
          file_paths_(std::move(file_paths)),
          groups_(std::move(groups)),
          spans_(std::move(spans)) {
        if (specs && !specs->is_none()) {
            specs_object_ = *specs;  // kept alive while the threads use it
            table_ = specs_object_.cast<const TensorSpecs*>();
            std::size_t total = 0;
            for (const std::size_t n : spans_) total += n;
            if (total != header_paths_.size() || groups_.size() != header_paths_.size()) {
                throw py::value_error("spans must cover the headers, and groups have one item per header");
            }
        }
        auto work = [this, max_size, jobs] {
            const auto start = std::chrono::steady_clock::now();
            headers_ = read_header_files(header_paths_, jobs, &from_page_cache_);
            header_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            threads_ = std::max(1u, std::min<unsigned>(jobs == 0 ? default_jobs() : jobs,
                                                       static_cast<unsigned>(std::max<std::size_t>(1, header_paths_.size()))));
            digests_ = digest_files(file_paths_, max_size, jobs);
            if (table_ != nullptr) match_spans();
        };
        try {
            worker_ = std::thread(work);
        } catch (const std::system_error&) {
            py::gil_scoped_release release;  // no thread to be had: read now
            work();
        }
    }
    BatchRead(const BatchRead&) = delete;
    BatchRead& operator=(const BatchRead&) = delete;
    ~BatchRead() {
        if (worker_.joinable()) worker_.join();  // its threads never wait on the GIL
    }

    py::tuple result() {
        if (worker_.joinable()) {
            py::gil_scoped_release release;
            worker_.join();
        }
        py::object matches = py::none();
        if (table_ != nullptr) matches = py::cast(matches_);
        return py::make_tuple(header_list(header_paths_, headers_), digest_list(digests_), std::move(matches));
    }

    // After result(): how many of the header files started in the page cache.
    std::size_t from_page_cache() const noexcept { return from_page_cache_; }
    // After result(): thread-seconds spent reading headers, per header file.
    double seconds_per_file() const noexcept {
        return header_paths_.empty() ? 0.0 : header_seconds_ * threads_ / static_cast<double>(header_paths_.size());
    }

private:
    // One match per checkpoint (span of consecutive headers), while they are in cache.
    void match_spans() {
        matches_.reserve(spans_.size());
        std::size_t at = 0;
        for (const std::size_t n : spans_) {
            std::vector<const ParsedHeader*> span;
            span.reserve(n);
            for (std::size_t i = at; i < at + n; ++i) span.push_back(headers_[i].get());
            const std::vector<std::int64_t> groups(groups_.begin() + static_cast<std::ptrdiff_t>(at),
                                                   groups_.begin() + static_cast<std::ptrdiff_t>(at + n));
            matches_.push_back(table_->match(span, groups));
            at += n;
        }
    }

    std::vector<std::string> header_paths_;
    std::vector<std::string> file_paths_;
    std::vector<std::int64_t> groups_;
    std::vector<std::size_t> spans_;
    py::object specs_object_;
    const TensorSpecs* table_ = nullptr;
    std::vector<std::shared_ptr<const ParsedHeader>> headers_;
    std::vector<FileDigest> digests_;
    std::vector<SpecMatch> matches_;
    std::size_t from_page_cache_ = 0;
    double header_seconds_ = 0.0;
    unsigned threads_ = 1;
    std::thread worker_;
};

}  // namespace

void register_batch(py::module_& m) {
    m.def("read_headers",
          [](const std::vector<std::string>& paths, unsigned jobs) {
              std::vector<std::shared_ptr<const ParsedHeader>> parsed;
              {
                  py::gil_scoped_release release;
                  parsed = read_header_files(paths, jobs);
              }
              return header_list(paths, parsed);
          },
          py::arg("paths"), py::arg("jobs") = 0,
          "Read many headers on up to `jobs` threads (0: one per core), results in input order.");

    m.def("digest_files",
          [](const std::vector<std::string>& paths, std::uint64_t max_size, unsigned jobs) {
              std::vector<FileDigest> digests;
              {
                  py::gil_scoped_release release;
                  digests = digest_files(paths, max_size, jobs);
              }
              return digest_list(digests);
          },
          py::arg("paths"), py::arg("max_size"), py::arg("jobs") = 0,
          "(size, digest) of each whole regular file up to max_size bytes, else None; "
          "read and hashed on up to `jobs` threads.");

    py::class_<BatchRead>(m, "BatchRead",
                          "Headers and whole small files read on native threads that never take the GIL: "
                          "started on construction, collected by result(). With `specs`, each span of "
                          "consecutive headers (a checkpoint) is also held against that table.")
        .def(py::init<std::vector<std::string>, std::vector<std::string>, std::uint64_t, unsigned,
                      std::optional<py::object>, std::vector<std::int64_t>, std::vector<std::size_t>>(),
             py::arg("header_paths"), py::arg("file_paths"), py::arg("max_size"), py::arg("jobs") = 0,
             py::arg("specs") = py::none(), py::arg("groups") = std::vector<std::int64_t>{},
             py::arg("spans") = std::vector<std::size_t>{})
        .def("result", &BatchRead::result,
             "Wait for the reads: (headers as Header objects, (size, digest) or None per file, "
             "a SpecMatch per span or None without specs).")
        .def_property_readonly("from_page_cache", &BatchRead::from_page_cache,
                               "After result(): header files whose start was in the page cache.")
        .def_property_readonly("seconds_per_file", &BatchRead::seconds_per_file,
                               "After result(): thread-seconds of header reading per file.");
    m.def("make_placeholders",
          [](const std::string& root,
             const std::vector<std::pair<std::string, std::uint64_t>>& files) {
              return without_gil(make_placeholders, root, files);
          },
          py::arg("root"), py::arg("files"),
          "Make root/name, a sparse file of `size` bytes, for each (name, size) (missing "
          "directories made): [(index, errno)] of those that could not be made (EINVAL: a "
          "name with an empty, '.' or '..' part, or absolute).");
    m.def("make_directories",
          [](const std::string& root, const std::vector<std::string>& names) {
              return without_gil(make_directories, root, names);
          },
          py::arg("root"), py::arg("names"),
          "Make root/name, a directory, for each name (missing parents made; one there "
          "already is made): [(index, errno)] of those that could not be made (EINVAL as "
          "for make_placeholders; ENOTDIR: the name, or one above it, is a file).");
    m.def("remove_tree",
          [](const std::string& root) {
              py::gil_scoped_release release;
              return remove_tree(root);
          },
          py::arg("root"),
          "Remove root and everything below it (symbolic links removed, never followed; "
          "one filesystem): 0, or the errno of the first failure (ENOENT: no root).");
    m.def("cachestat_supported", &cachestat_supported,
          "Whether header reads can tell a file in the page cache (cachestat, Linux 6.5+).");
}

}  // namespace pyaudit
