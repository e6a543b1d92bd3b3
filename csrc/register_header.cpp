// Python face of the header reader: an immutable Header object per file.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <functional>
#include <string_view>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "batch.hpp"
#include "bindings.hpp"
#include "header.hpp"
#include "header_file.hpp"

namespace py = pybind11;

namespace pyaudit {
namespace {

// One parsed file. Holds the header text; tensor names and shapes are made into
// Python objects only when asked for.
class Header {
public:
    Header(std::string path, ParsedHeader parsed)
        : path_(std::move(path)), parsed_(std::make_shared<ParsedHeader>(std::move(parsed))) {}

    const std::string& path() const noexcept { return path_; }
    const ParsedHeader& parsed() const noexcept { return *parsed_; }

private:
    std::string path_;
    std::shared_ptr<const ParsedHeader> parsed_;
};

py::str to_str(std::string_view s) {
    // Header text was validated as UTF-8; names decoded from escapes are UTF-8 too.
    PyObject* obj = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogatepass");
    if (obj == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(obj);
}

const std::array<py::object, kDtypeCount>& dtype_strings() {
    // Interned once; every tensor's dtype is one of these objects.
    static const auto* table = [] {
        auto* t = new std::array<py::object, kDtypeCount>();
        for (std::size_t i = 0; i < kDtypeCount; ++i) {
            (*t)[i] = py::str(std::string(dtype_name(static_cast<Dtype>(i))));
        }
        return t;
    }();
    return *table;
}

py::list names_of(const ParsedHeader& h) {
    py::list out(h.tensors.size());
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), to_str(h.name(h.tensors[i])).release().ptr());
    }
    return out;
}

py::list dtypes_of(const ParsedHeader& h) {
    const auto& table = dtype_strings();
    py::list out(h.tensors.size());
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        py::object s = table[static_cast<std::size_t>(h.tensors[i].dtype)];
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), s.release().ptr());
    }
    return out;
}

py::list shapes_of(const ParsedHeader& h) {
    py::list out(h.tensors.size());
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        const std::vector<std::uint64_t> dims = h.shape(h.tensors[i]);
        py::tuple shape(dims.size());
        for (std::size_t d = 0; d < dims.size(); ++d) {
            PyTuple_SET_ITEM(shape.ptr(), static_cast<Py_ssize_t>(d), PyLong_FromUnsignedLongLong(dims[d]));
        }
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), shape.release().ptr());
    }
    return out;
}

py::list offsets_of(const ParsedHeader& h) {
    py::list out(h.tensors.size());
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        py::tuple pair(2);
        PyTuple_SET_ITEM(pair.ptr(), 0, PyLong_FromUnsignedLongLong(h.tensors[i].begin));
        PyTuple_SET_ITEM(pair.ptr(), 1, PyLong_FromUnsignedLongLong(h.tensors[i].end));
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), pair.release().ptr());
    }
    return out;
}

py::object metadata_of(const ParsedHeader& h) {
    if (!h.has_metadata) return py::none();
    py::dict out;
    for (const auto& [key, value] : h.metadata) out[to_str(key)] = to_str(value);
    return std::move(out);
}

py::object optional_str(const std::string& s) {
    if (s.empty()) return py::none();
    return to_str(s);
}

}  // namespace

void register_header(py::module_& m) {
    py::class_<Header>(m, "Header",
                       "One safetensors file's header, parsed and validated. Never holds tensor data.")
        .def_property_readonly("path", [](const Header& h) { return h.path(); })
        .def_property_readonly("ok", [](const Header& h) { return h.parsed().ok(); },
                               "True when the file follows every format rule.")
        .def_property_readonly("rule", [](const Header& h) { return std::string(rule_code(h.parsed().issue.rule)); },
                               "The rule the file broke ('ok' when none).")
        .def_property_readonly("message", [](const Header& h) { return optional_str(h.parsed().issue.message); })
        .def_property_readonly("error_tensor", [](const Header& h) { return optional_str(h.parsed().issue.tensor); })
        .def_property_readonly("file_size", [](const Header& h) { return h.parsed().file_size; })
        .def_property_readonly("header_size", [](const Header& h) { return h.parsed().header_size; },
                               "Bytes of header JSON (the length prefix).")
        .def_property_readonly("data_size", [](const Header& h) { return h.parsed().data_size; },
                               "Bytes of tensor data the header describes.")
        .def_property_readonly("metadata", [](const Header& h) { return metadata_of(h.parsed()); })
        .def_property_readonly("digest", [](const Header& h) {
                return static_cast<std::uint64_t>(std::hash<std::string_view>{}(h.parsed().text));
            },
            "A 64-bit hash of the header JSON: equal headers, equal digests (for memoising audits).")
        .def("__len__", [](const Header& h) { return h.parsed().tensors.size(); })
        .def("names", [](const Header& h) { return names_of(h.parsed()); }, "Tensor names, in header order.")
        .def("dtypes", [](const Header& h) { return dtypes_of(h.parsed()); })
        .def("shapes", [](const Header& h) { return shapes_of(h.parsed()); })
        .def("data_offsets", [](const Header& h) { return offsets_of(h.parsed()); })
        .def("table", [](const Header& h) {
                const ParsedHeader& p = h.parsed();
                return py::make_tuple(names_of(p), dtypes_of(p), shapes_of(p), offsets_of(p));
            },
            "(names, dtypes, shapes, data_offsets): four lists in header order, in one call.")
        .def("__repr__", [](const Header& h) {
            const ParsedHeader& p = h.parsed();
            return "<Header " + h.path() + ": " +
                   (p.ok() ? std::to_string(p.tensors.size()) + " tensors" : std::string(rule_code(p.issue.rule))) + ">";
        });

    m.def("read_header",
          [](const std::string& path) {
              ParsedHeader parsed;
              {
                  py::gil_scoped_release release;
                  parsed = read_header_file(path);
              }
              return Header(path, std::move(parsed));
          },
          py::arg("path"), "Read and validate one file's header. Failures are in the result.");

    m.def("read_headers",
          [](const std::vector<std::string>& paths, unsigned jobs) {
              std::vector<ParsedHeader> parsed;
              {
                  py::gil_scoped_release release;
                  parsed = read_header_files(paths, jobs);
              }
              py::list out(parsed.size());
              for (std::size_t i = 0; i < parsed.size(); ++i) {
                  out[i] = py::cast(Header(paths[i], std::move(parsed[i])));
              }
              return out;
          },
          py::arg("paths"), py::arg("jobs") = 0,
          "Read many headers on up to `jobs` threads (0: one per core), results in input order.");

    m.def("parse_header_bytes",
          [](py::buffer data, std::uint64_t file_size, const std::string& path) {
              const py::buffer_info info = data.request();
              if (info.ndim != 1 || info.itemsize != 1) throw py::value_error("expected a 1-D byte buffer");
              const auto* bytes = static_cast<const unsigned char*>(info.ptr);
              const auto size = static_cast<std::size_t>(info.size);
              ParsedHeader parsed;
              {
                  py::gil_scoped_release release;
                  parsed = parse_header_prefix(bytes, size, file_size);
              }
              return Header(path, std::move(parsed));
          },
          py::arg("data"), py::arg("file_size"), py::arg("path") = "",
          "Validate a header from bytes: the start of a file of `file_size` bytes, holding at least the header.");

    m.def("header_span",
          [](py::bytes first) -> std::uint64_t {
              const std::string s = first;
              if (s.size() < kLengthPrefix) return 0;
              std::uint64_t n = read_length_prefix(reinterpret_cast<const unsigned char*>(s.data()));
              return n > kMaxHeaderSize ? 0 : n + kLengthPrefix;
          },
          py::arg("first"), "Bytes from the start of the file the header needs (0: unknown or too large).");

    m.def("default_jobs", &default_jobs);

    py::dict bits;
    for (std::size_t i = 0; i < kDtypeCount; ++i) {
        bits[py::str(std::string(dtype_name(static_cast<Dtype>(i))))] = dtype_bits(static_cast<Dtype>(i));
    }
    m.attr("DTYPE_BITS") = bits;
    m.attr("MAX_HEADER_SIZE") = kMaxHeaderSize;
}

}  // namespace pyaudit
