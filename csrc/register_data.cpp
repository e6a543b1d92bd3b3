// Python face of --verify-data: per-file results, flagged tensors only.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "batch.hpp"
#include "bindings.hpp"
#include "data_checks.hpp"

namespace py = pybind11;

namespace pyaudit {

void register_data(py::module_& m) {
    m.def(
        "check_data",
        [](const std::vector<std::string>& paths, unsigned jobs) {
            std::vector<FileDataResult> results;
            {
                py::gil_scoped_release release;
                results = check_files_data(paths, jobs);
            }
            py::list out(results.size());
            for (std::size_t i = 0; i < results.size(); ++i) {
                const FileDataResult& r = results[i];
                py::list flagged;
                for (std::size_t t = 0; t < r.stats.size(); ++t) {
                    const TensorDataStats& s = r.stats[t];
                    if (s.nan == 0 && s.inf == 0 && !s.all_zero) continue;
                    const std::string_view name = r.header.name(r.header.tensors[t]);
                    flagged.append(py::make_tuple(
                        py::str(std::string(name)), s.nan, s.inf, s.all_zero));
                }
                py::dict doc;
                doc["header_ok"] = r.header.ok();
                doc["rule"] = std::string(rule_code(r.header.issue.rule));
                doc["message"] = r.header.issue.message;
                doc["error"] = r.error;
                doc["bytes_read"] = r.bytes_read;
                doc["tensors"] = r.header.tensors.size();
                doc["flagged"] = flagged;
                out[i] = doc;
            }
            return out;
        },
        py::arg("paths"), py::arg("jobs") = 0,
        "Stream every tensor's bytes of each file: NaN/Inf counts and all-zero tensors.\n"
        "Returns one dict per file: header_ok, rule, message, error, bytes_read, tensors,\n"
        "flagged = [(name, nan, inf, all_zero)] for tensors with anything to report.");
}

}  // namespace pyaudit
