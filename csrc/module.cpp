// pyaudit._core: the native core. One register_*() per part.
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyaudit's native core: safetensors headers read and validated at disk speed.";
    pyaudit::register_header(m);
    pyaudit::register_data(m);
    pyaudit::register_specs(m);
    pyaudit::register_batch(m);
    pyaudit::register_pickle(m);
}
