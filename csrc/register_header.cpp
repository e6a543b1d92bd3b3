// Python face of the header reader: an immutable Header object per file.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "batch.hpp"
#include "bindings.hpp"
#include "header.hpp"
#include "hash.hpp"
#include "header_file.hpp"
#include "header_object.hpp"

namespace py = pybind11;

namespace pyaudit {
namespace {

bool is_ascii(std::string_view s) noexcept {
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t word;
        std::memcpy(&word, s.data() + i, sizeof word);
        if (word & 0x8080808080808080ULL) return false;
    }
    for (; i < s.size(); ++i) {
        if (static_cast<unsigned char>(s[i]) & 0x80) return false;
    }
    return true;
}

py::str to_str(std::string_view s) {
    const auto size = static_cast<Py_ssize_t>(s.size());
    if (is_ascii(s)) {  // nearly every name: copied into a new str, no decoder
        PyObject* obj = PyUnicode_New(size, 127);
        if (obj == nullptr) throw py::error_already_set();
        std::memcpy(PyUnicode_1BYTE_DATA(obj), s.data(), s.size());
        return py::reinterpret_steal<py::str>(obj);
    }
    // Header text was validated as UTF-8; names decoded from escapes are UTF-8 too.
    PyObject* obj = PyUnicode_DecodeUTF8(s.data(), size, "surrogatepass");
    if (obj == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(obj);
}

// A tuple of ints holds no reference cycle: kept out of the cyclic GC, as
// CPython itself does for such tuples, so that building thousands of shapes
// and offsets does not make every collection walk them.
PyObject* untracked(PyObject* tuple) noexcept {
    PyObject_GC_UnTrack(tuple);
    return tuple;
}

PyObject* int_tuple(const std::uint64_t* values, std::size_t count) {
    PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(count));
    if (tuple == nullptr) throw py::error_already_set();
    for (std::size_t i = 0; i < count; ++i) {
        PyObject* v = PyLong_FromUnsignedLongLong(values[i]);
        if (v == nullptr) {
            Py_DECREF(tuple);
            throw py::error_already_set();
        }
        PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), v);
    }
    return untracked(tuple);
}

// The shape of a tensor as a tuple, read from its validated JSON text
// ("[" uint ("," uint)* "]" with JSON whitespace). Tensors of one header share
// few shapes (every layer repeats its own), so equal shape texts share one
// (immutable) tuple within a call.
class ShapeTuples {
public:
    ~ShapeTuples() {
        for (Slot& slot : slots_) Py_XDECREF(slot.tuple);
    }

    // A new reference.
    PyObject* get(const ParsedHeader& h, const TensorRecord& t) {
        const std::string_view text = std::string_view(h.text).substr(t.shape_offset, t.shape_length);
        // Keyed by (element count, rank), known already; the text decides.
        const std::uint64_t hash = (t.elements + t.rank) * 0x9E3779B97F4A7C15ULL;
        Slot& slot = slots_[static_cast<std::size_t>(hash >> 58)];  // 64 slots
        if (slot.tuple != nullptr && slot.text == text) {
            Py_INCREF(slot.tuple);
            return slot.tuple;
        }
        PyObject* tuple = parse(text, t.rank);
        Py_XDECREF(slot.tuple);
        Py_INCREF(tuple);
        slot = Slot{text, tuple};
        return tuple;
    }

private:
    struct Slot {
        std::string_view text;
        PyObject* tuple = nullptr;
    };
    std::array<Slot, 64> slots_{};

    static PyObject* parse(std::string_view text, std::uint32_t rank) {
        std::array<std::uint64_t, 8> small{};
        std::vector<std::uint64_t> large;
        std::uint64_t* dims = small.data();
        if (rank > small.size()) {
            large.resize(rank);
            dims = large.data();
        }
        std::size_t n = 0;
        std::uint64_t value = 0;
        bool in_number = false;
        for (const char c : text) {
            if (c >= '0' && c <= '9') {
                value = value * 10 + static_cast<std::uint64_t>(c - '0');
                in_number = true;
            } else if (in_number) {
                if (n < rank) dims[n] = value;
                ++n;
                value = 0;
                in_number = false;
            }
        }
        return int_tuple(dims, n < rank ? n : rank);
    }
};

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
    ShapeTuples shapes;
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), shapes.get(h, h.tensors[i]));
    }
    return out;
}

py::list offsets_of(const ParsedHeader& h) {
    py::list out(h.tensors.size());
    // Tensors tile the data section, so each one's begin is usually the one
    // before's end: that int is shared (ints are immutable), not made twice.
    py::object previous_end;
    std::uint64_t previous_end_value = 0;
    const auto make_int = [](std::uint64_t v) {
        PyObject* obj = PyLong_FromUnsignedLongLong(v);
        if (obj == nullptr) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(obj);
    };
    for (std::size_t i = 0; i < h.tensors.size(); ++i) {
        const TensorRecord& t = h.tensors[i];
        py::object begin = previous_end && previous_end_value == t.begin ? previous_end : make_int(t.begin);
        py::object end = make_int(t.end);
        PyObject* pair = PyTuple_New(2);
        if (pair == nullptr) throw py::error_already_set();
        PyTuple_SET_ITEM(pair, 0, begin.release().ptr());
        PyTuple_SET_ITEM(pair, 1, end.inc_ref().ptr());
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), untracked(pair));
        previous_end = std::move(end);
        previous_end_value = t.end;
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
        .def_property_readonly("digest", [](const Header& h) { return h.digest(); },
            "A 64-bit hash of the header JSON, seeded per process and computed once: equal "
            "headers, equal digests (for memoising audits).")
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
              std::shared_ptr<const ParsedHeader> parsed;
              {
                  py::gil_scoped_release release;
                  parsed = read_header_shared(path, nullptr);
              }
              return Header(path, std::move(parsed));
          },
          py::arg("path"), "Read and validate one file's header. Failures are in the result.");

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
              const std::string s = first;  // the file's size is not known yet: any
              return header_extent(reinterpret_cast<const unsigned char*>(s.data()), s.size(), UINT64_MAX);
          },
          py::arg("first"), "Bytes from the start of the file the header needs (0: unknown or too large).");

    m.def("hash_bytes",
          [](const py::bytes& data) {
              const std::string_view view = data;
              return hash_bytes(view);
          },
          py::arg("data"), "The digest digest_files and Header.digest use, of these bytes.");

    m.def("default_jobs", &default_jobs);

    py::dict bits;
    for (std::size_t i = 0; i < kDtypeCount; ++i) {
        bits[py::str(std::string(dtype_name(static_cast<Dtype>(i))))] = dtype_bits(static_cast<Dtype>(i));
    }
    m.attr("DTYPE_BITS") = bits;
    m.attr("MAX_HEADER_SIZE") = kMaxHeaderSize;
}

}  // namespace pyaudit
