// The palm Python extension (_palm): what its three sources share. Compute runs with the
// GIL released; every palm::Error becomes palm.Error with palm's one-line message.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/signals.h"

namespace palm::py_bindings {

namespace py = pybind11;

// palm computing from Python: the GIL released, then signals deferred until the call
// returns (base/signals.h: Python's own SIGINT handler, run on a thread inside oneDNN's
// GEMM, corrupted the heap); undone in the reverse order.
struct Computing {
  py::gil_scoped_release nogil;
  SignalsDeferred signals;
};

// Token ids from a Python list/tuple of ints or a 1-D integer NumPy array, each checked
// against the vocabulary [0, vocab); anything else is a palm.Error naming `what`.
std::vector<std::int32_t> ids_from(const py::handle& obj, std::int64_t vocab, const char* what);

void bind_tokenizer(py::module_& m);
void bind_model(py::module_& m);
void bind_training(py::module_& m);  // train() and eval()

}  // namespace palm::py_bindings
