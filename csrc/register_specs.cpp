// Python face of TensorSpecs: headers held against a table of named tensors.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "header_object.hpp"
#include "tensor_specs.hpp"

namespace py = pybind11;

namespace pyaudit {
namespace {

// Names as UTF-8 bytes; a lone surrogate (possible in a str parsed from hostile
// JSON) is kept as its 3 bytes, which no valid header's name can equal.
std::string utf8_of(const py::handle& obj) {
    if (!PyUnicode_Check(obj.ptr())) throw py::type_error("tensor names must be str");
    PyObject* bytes = PyUnicode_AsEncodedString(obj.ptr(), "utf-8", "surrogatepass");
    if (bytes == nullptr) throw py::error_already_set();
    std::string out(PyBytes_AS_STRING(bytes), static_cast<std::size_t>(PyBytes_GET_SIZE(bytes)));
    Py_DECREF(bytes);
    return out;
}

template <typename T>
void check_length(const std::optional<T>& column, std::size_t n, const char* what) {
    if (column && static_cast<std::size_t>(py::len(*column)) != n) {
        throw py::value_error(std::string(what) + " must have one item per name");
    }
}

TensorSpecs make_specs(const py::sequence& names, const std::optional<py::sequence>& dtypes,
                       const std::optional<py::sequence>& shapes, const std::optional<py::sequence>& groups,
                       const std::optional<py::sequence>& optional) {
    const auto n = static_cast<std::size_t>(py::len(names));
    check_length(dtypes, n, "dtypes");
    check_length(shapes, n, "shapes");
    check_length(groups, n, "groups");
    check_length(optional, n, "optional");
    std::vector<TensorSpec> specs(n);
    for (std::size_t i = 0; i < n; ++i) {
        TensorSpec& spec = specs[i];
        spec.name = utf8_of(names[i]);
        if (dtypes) {
            py::object d = (*dtypes)[i];
            if (!d.is_none()) {
                const auto dtype = dtype_from_name(d.cast<std::string>());
                if (!dtype) throw py::value_error("unknown dtype " + d.cast<std::string>());
                spec.dtype = *dtype;
            }
        }
        if (shapes) {
            py::object s = (*shapes)[i];
            if (!s.is_none()) spec.shape = s.cast<std::vector<std::uint64_t>>();
        }
        if (groups) spec.group = (*groups)[i].cast<std::int64_t>();
        if (optional) spec.optional = (*optional)[i].cast<bool>();
    }
    return TensorSpecs(std::move(specs));
}

std::vector<const ParsedHeader*> parsed_of(const py::sequence& headers) {
    std::vector<const ParsedHeader*> out;
    out.reserve(static_cast<std::size_t>(py::len(headers)));
    for (const py::handle h : headers) out.push_back(&h.cast<const Header&>().parsed());
    return out;
}

}  // namespace

void register_specs(py::module_& m) {
    py::class_<SpecMatch>(m, "SpecMatch", "Counts from holding headers against a TensorSpecs table.")
        .def_readonly("tensors", &SpecMatch::tensors, "Tensors in the (valid) headers.")
        .def_readonly("known", &SpecMatch::known, "Tensors whose name the table holds.")
        .def_readonly("required_seen", &SpecMatch::required_seen, "Distinct non-optional entries seen.")
        .def_readonly("optional_seen", &SpecMatch::optional_seen, "Distinct optional entries seen.")
        .def_readonly("dtype_differs", &SpecMatch::dtype_differs, "Known tensors of another dtype than stated.")
        .def_readonly("shape_differs", &SpecMatch::shape_differs, "Known tensors of another shape than stated.")
        .def_readonly("repeated", &SpecMatch::repeated, "Known tensors whose name an earlier tensor had.")
        .def_readonly("in_group", &SpecMatch::in_group,
                      "Per header: tensors whose entry's group is the header's group.")
        .def("__repr__", [](const SpecMatch& s) {
            return "<SpecMatch tensors=" + std::to_string(s.tensors) + " known=" + std::to_string(s.known) +
                   " required_seen=" + std::to_string(s.required_seen) + " dtype_differs=" +
                   std::to_string(s.dtype_differs) + " shape_differs=" + std::to_string(s.shape_differs) +
                   " repeated=" + std::to_string(s.repeated) + ">";
        });

    py::class_<TensorSpecs>(m, "TensorSpecs",
                            "A table of named tensors (dtype, shape, group, optional), to hold headers against.")
        .def(py::init(&make_specs), py::arg("names"), py::arg("dtypes") = py::none(),
             py::arg("shapes") = py::none(), py::arg("groups") = py::none(), py::arg("optional") = py::none())
        .def("__len__", &TensorSpecs::size)
        .def_property_readonly("required", &TensorSpecs::required, "Entries not marked optional.")
        .def(
            "match",
            [](const TensorSpecs& specs, const py::sequence& headers, const std::optional<std::vector<std::int64_t>>& groups) {
                const std::vector<const ParsedHeader*> parsed = parsed_of(headers);
                if (groups && groups->size() != parsed.size()) {
                    throw py::value_error("groups must have one item per header");
                }
                // The GIL is kept: a match takes microseconds, and giving the GIL up to
                // a sweep's reading thread costs more than that to get it back.
                return specs.match(parsed, groups ? *groups : std::vector<std::int64_t>{});
            },
            py::arg("headers"), py::arg("groups") = py::none(),
            "Hold the tensors of `headers` against the table; invalid headers are skipped.");

    m.def("count_repeated_names",
          [](const py::sequence& headers) { return count_repeated_names(parsed_of(headers)); },
          py::arg("headers"), "Tensors (over valid headers, in order) whose name an earlier tensor had.");
    m.def("count_names_containing",
          [](const py::sequence& headers, const std::string& needle) {
              return count_names_containing(parsed_of(headers), needle);
          },
          py::arg("headers"), py::arg("needle"), "Tensors (over valid headers) whose name contains `needle`.");
}

}  // namespace pyaudit
