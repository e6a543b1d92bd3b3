#pragma once

#include <pybind11/pybind11.h>

namespace pyaudit {

void register_header(pybind11::module_& m);
void register_data(pybind11::module_& m);
void register_specs(pybind11::module_& m);
void register_batch(pybind11::module_& m);
void register_pickle(pybind11::module_& m);

}  // namespace pyaudit
