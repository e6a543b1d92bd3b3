// Python face of the torch checkpoint reader: a TorchFile per file (zip, legacy or
// plain pickle), read on native threads without the GIL. Never holds tensor data.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "parallel.hpp"
#include "pickle/torch_file.hpp"

namespace py = pybind11;

namespace pyaudit {
namespace {

using pickle::TorchFile;

struct TorchFileObject {
    std::string path;
    std::shared_ptr<const TorchFile> file;
};

py::str text(const std::string& s) {
    // Names come from the pickle: not necessarily valid UTF-8 (protocol 0 strings,
    // hostile files). Never a decode error: invalid bytes are escaped.
    PyObject* obj = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
    if (obj == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(obj);
}

py::object optional_text(const std::string& s) {
    if (s.empty()) return py::none();
    return text(s);
}

py::tuple ints(const std::vector<std::uint64_t>& v) {
    py::tuple out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = py::int_(v[i]);
    return out;
}

py::tuple tensor_table(const TorchFile& f) {
    py::list names, dtypes, shapes, strides, offsets, keys, needed;
    for (const auto& t : f.tensors) {
        names.append(text(t.name));
        dtypes.append(text(t.dtype));
        shapes.append(ints(t.shape));
        strides.append(ints(t.stride));
        offsets.append(py::int_(t.storage_offset));
        keys.append(text(f.storages[t.storage].key));
        needed.append(py::int_(t.needed_bytes));
    }
    return py::make_tuple(names, dtypes, shapes, strides, offsets, keys, needed);
}

py::list storage_list(const TorchFile& f) {
    py::list out;
    for (const auto& s : f.storages) {
        out.append(py::make_tuple(text(s.key), text(s.dtype), s.numel, s.nbytes, text(s.location), s.present,
                                  s.record_size, s.needed_bytes));
    }
    return out;
}

py::list problem_list(const TorchFile& f) {
    py::list out;
    for (const auto& p : f.problems) {
        out.append(py::make_tuple(std::string(pickle::torch_rule_code(p.rule)), optional_text(p.tensor), text(p.message)));
    }
    return out;
}

py::list global_list(const TorchFile& f) {
    py::list out;
    for (const auto& g : f.globals) out.append(py::make_tuple(text(g.module), text(g.name), g.count, g.recognised));
    return out;
}

py::list value_list(const TorchFile& f) {
    py::list out;
    for (const auto& v : f.values) {
        py::object value = v.is_size ? py::object(ints(v.dims))
                         : v.is_int  ? py::object(py::int_(v.number))
                                     : py::object(text(v.text));
        out.append(py::make_tuple(text(v.path), value));
    }
    return out;
}

py::list dcp_entry_list(const TorchFile& f) {
    py::list out;
    for (const auto& e : f.dcp_entries) {
        py::list chunks;
        for (const auto& c : e.chunks) chunks.append(py::make_tuple(ints(c.offsets), ints(c.sizes)));
        out.append(py::make_tuple(text(e.fqn), e.is_tensor, optional_text(e.dtype), ints(e.shape), chunks));
    }
    return out;
}

py::list dcp_item_list(const TorchFile& f) {
    py::list out;
    for (const auto& i : f.dcp_items) {
        out.append(py::make_tuple(text(i.fqn), ints(i.chunk_offset), text(i.relative_path), i.offset, i.length));
    }
    return out;
}

}  // namespace

void register_pickle(py::module_& m) {
    py::class_<TorchFileObject>(m, "TorchFile",
                                "One torch checkpoint (zip, legacy or plain pickle) read as data. Never holds tensor data.")
        .def_property_readonly("path", [](const TorchFileObject& o) { return o.path; })
        .def_property_readonly("ok", [](const TorchFileObject& o) { return o.file->ok(); },
                               "True when the file was read whole and every tensor's storage is present and long enough.")
        .def_property_readonly("rule", [](const TorchFileObject& o) {
                return std::string(pickle::torch_rule_code(o.file->issue.rule)); },
            "The rule that stopped the read ('ok' when none; see problems for per-tensor issues).")
        .def_property_readonly("message", [](const TorchFileObject& o) { return optional_text(o.file->issue.message); })
        .def_property_readonly("kind", [](const TorchFileObject& o) { return o.file->kind; },
                               "'zip', 'legacy', 'pickle', or '' when the file is none of them.")
        .def_property_readonly("file_size", [](const TorchFileObject& o) { return o.file->file_size; })
        .def_property_readonly("archive", [](const TorchFileObject& o) { return o.file->archive; })
        .def_property_readonly("pickle_offset", [](const TorchFileObject& o) { return o.file->pickle_offset; })
        .def_property_readonly("pickle_size", [](const TorchFileObject& o) { return o.file->pickle_size; })
        .def_property_readonly("protocol", [](const TorchFileObject& o) { return o.file->protocol; })
        .def_property_readonly("bytes_read", [](const TorchFileObject& o) { return o.file->bytes_read; },
                               "Bytes of the file read (directory and pickle; never tensor data).")
        .def_property_readonly("zip_records", [](const TorchFileObject& o) { return o.file->zip_records; })
        .def_property_readonly("is_dcp", [](const TorchFileObject& o) { return o.file->is_dcp; })
        .def_property_readonly("problems_dropped", [](const TorchFileObject& o) { return o.file->problems_dropped; })
        .def("__len__", [](const TorchFileObject& o) { return o.file->tensors.size(); })
        .def("table", [](const TorchFileObject& o) { return tensor_table(*o.file); },
             "(names, dtypes, shapes, strides, storage_offsets, storage_keys, needed_bytes), in pickle order.")
        .def("storages", [](const TorchFileObject& o) { return storage_list(*o.file); },
             "(key, dtype, numel, nbytes, location, present, record_size, needed_bytes) per storage.")
        .def("problems", [](const TorchFileObject& o) { return problem_list(*o.file); },
             "(rule, tensor or None, message) per tensor/storage problem.")
        .def("globals", [](const TorchFileObject& o) { return global_list(*o.file); },
             "(module, name, count, recognised) per global the pickle names. None was imported or called.")
        .def("values", [](const TorchFileObject& o) { return value_list(*o.file); },
             "(path, value) per int, short string or torch.Size the pickle holds beside its tensors.")
        .def("dcp_entries", [](const TorchFileObject& o) { return dcp_entry_list(*o.file); },
             "(fqn, is_tensor, dtype, shape, [(offsets, sizes)]) per DCP state_dict_metadata entry.")
        .def("dcp_items", [](const TorchFileObject& o) { return dcp_item_list(*o.file); },
             "(fqn, chunk_offset, relative_path, offset, length) per DCP storage_data entry.")
        .def("__repr__", [](const TorchFileObject& o) {
            return "<TorchFile " + o.path + ": " + (o.file->issue.rule == pickle::TorchRule::ok
                        ? std::to_string(o.file->tensors.size()) + " tensors"
                        : std::string(pickle::torch_rule_code(o.file->issue.rule))) + ">";
        });

    m.def("read_torch_file",
          [](const std::string& path) {
              auto file = std::make_shared<TorchFile>();
              {
                  py::gil_scoped_release release;
                  *file = pickle::read_torch_file(path);
              }
              return TorchFileObject{path, std::move(file)};
          },
          py::arg("path"), "Read one torch checkpoint's directory and pickle (never its tensor data).");

    m.def("read_torch_files",
          [](const std::vector<std::string>& paths, unsigned jobs) {
              std::vector<std::shared_ptr<const TorchFile>> files(paths.size());
              {
                  py::gil_scoped_release release;
                  parallel_for(paths.size(), jobs == 0 ? std::thread::hardware_concurrency() : jobs,
                               [&](std::size_t i) {
                                   files[i] = std::make_shared<const TorchFile>(pickle::read_torch_file(paths[i]));
                               });
              }
              py::list out;
              for (std::size_t i = 0; i < paths.size(); ++i) out.append(TorchFileObject{paths[i], files[i]});
              return out;
          },
          py::arg("paths"), py::arg("jobs") = 0, "read_torch_file for many paths on up to `jobs` threads.");

    m.def("parse_torch_bytes",
          [](py::buffer data, const std::string& path) {
              const py::buffer_info info = data.request();
              if (info.ndim != 1 || info.itemsize != 1) throw py::value_error("expected a 1-D byte buffer");
              auto file = std::make_shared<TorchFile>();
              {
                  py::gil_scoped_release release;
                  *file = pickle::parse_torch_bytes(static_cast<const unsigned char*>(info.ptr),
                                                    static_cast<std::size_t>(info.size));
              }
              return TorchFileObject{path, std::move(file)};
          },
          py::arg("data"), py::arg("path") = "", "Read a torch checkpoint held whole in memory.");
}

}  // namespace pyaudit
