// _palm: the module, palm.Error, token-id conversion and the Tokenizer.
#include <pybind11/stl.h>

#include "base/check.h"
#include "base/special_tokens.h"
#include "bindings.h"
#include "tokenizer/tokenizer.h"

namespace palm::py_bindings {

std::vector<std::int32_t> ids_from(const py::handle& obj, std::int64_t vocab, const char* what) {
  std::vector<std::int32_t> ids;
  auto check = [&](long long v, std::size_t i) {
    PALM_CHECK(v >= 0 && v < vocab, what, ": token id ", v, " at position ", i, " is outside the vocabulary [0, ",
               vocab, ")");
    ids.push_back(std::int32_t(v));
  };
  if (py::isinstance<py::array>(obj)) {
    const auto a = py::reinterpret_borrow<py::array>(obj);
    const char kind = a.dtype().kind();
    PALM_CHECK(kind == 'i' || kind == 'u', what, ": token ids must be integers, got a NumPy array of dtype ",
               std::string(py::str(a.dtype())));
    PALM_CHECK(a.ndim() == 1, what, ": expected a 1-D array of token ids, got ", a.ndim(), " dimensions");
    const auto as64 = py::array_t<long long, py::array::c_style | py::array::forcecast>::ensure(a);
    const long long* p = as64.data();
    for (py::ssize_t i = 0; i < as64.size(); ++i) check(p[i], std::size_t(i));
    return ids;
  }
  PALM_CHECK(py::isinstance<py::sequence>(obj) && !py::isinstance<py::str>(obj) && !py::isinstance<py::bytes>(obj),
             what, ": expected a list of token ids or a 1-D integer NumPy array, got ",
             std::string(py::str(obj.get_type().attr("__name__"))));
  std::size_t i = 0;
  for (const auto& item : py::reinterpret_borrow<py::sequence>(obj)) {
    // Python ints and NumPy integer scalars (anything with __index__), but not bools
    PALM_CHECK(PyIndex_Check(item.ptr()) && !py::isinstance<py::bool_>(item), what, ": element ", i,
               " is not an integer token id");
    const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(item.ptr()));
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    PALM_CHECK(!overflow, what, ": token id at position ", i, " is outside the vocabulary [0, ", vocab, ")");
    check(v, i);
    ++i;
  }
  return ids;
}

namespace {

py::array_t<std::int32_t> to_numpy(std::vector<std::int32_t> ids) {
  auto* held = new std::vector<std::int32_t>(std::move(ids));  // the array owns the vector: no copy
  py::capsule owner(held, [](void* p) { delete static_cast<std::vector<std::int32_t>*>(p); });
  return py::array_t<std::int32_t>({py::ssize_t(held->size())}, {py::ssize_t(sizeof(std::int32_t))}, held->data(),
                                   owner);
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  py::class_<Tokenizer>(m, "Tokenizer", "palm's lossless SentencePiece vocabulary (a tokenizer directory)")
      .def(py::init([](const std::string& dir) { return Tokenizer::load(dir); }), py::arg("dir"))
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text) {
            std::vector<std::int32_t> ids;
            {
              py::gil_scoped_release nogil;
              ids = t.encode(text);
            }
            return to_numpy(std::move(ids));
          },
          py::arg("text"), "Token ids of the text (int32 NumPy array)")
      .def(
          "decode",
          [](const Tokenizer& t, const py::object& ids) {
            const std::string bytes = t.decode(ids_from(ids, t.vocab_size(), "decode"));
            // a cut inside a multi-byte character decodes to U+FFFD, as palm generate's JSON
            return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(bytes.data(), py::ssize_t(bytes.size()), "replace"));
          },
          py::arg("ids"), "Text of the ids (a split character becomes U+FFFD; decode_bytes gives the exact bytes)")
      .def(
          "decode_bytes",
          [](const Tokenizer& t, const py::object& ids) { return py::bytes(t.decode(ids_from(ids, t.vocab_size(), "decode_bytes"))); },
          py::arg("ids"))
      .def("pieces", &Tokenizer::encode_pieces, py::arg("text"), "The pieces the text encodes to")
      .def(
          "piece",
          [](const Tokenizer& t, std::int64_t id) {
            PALM_CHECK(id >= 0 && id < t.vocab_size(), "piece: id ", id, " is outside the vocabulary [0, ",
                       t.vocab_size(), ")");
            return t.piece(std::int32_t(id));
          },
          py::arg("id"))
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("sha256", &Tokenizer::sha256)
      .def_property_readonly("dir", &Tokenizer::dir)
      .def_property_readonly_static("pad_id", [](py::object) { return kPadId; })
      .def_property_readonly_static("eod_id", [](py::object) { return kEodId; })
      .def_property_readonly_static("unk_id", [](py::object) { return kUnkId; })
      .def("__len__", &Tokenizer::vocab_size)
      .def("__repr__", [](const Tokenizer& t) { return "palm.Tokenizer('" + t.dir() + "', vocab_size=" + std::to_string(t.vocab_size()) + ")"; });
}

}  // namespace palm::py_bindings

PYBIND11_MODULE(_palm, m) {
  namespace pb = palm::py_bindings;
  m.doc() = "palm's C++ core: tokenizer, models (score, generate, forward), training and evaluation";
  pybind11::register_exception<palm::Error>(m, "Error", PyExc_RuntimeError);
  pb::bind_tokenizer(m);
  pb::bind_model(m);
  pb::bind_training(m);
}
