// safetensors I/O: bit-exact round trip, BF16 reading, and every kind of bad file
// rejected with one clear line (never a crash).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "model/model_io.h"
#include "model/safetensors.h"

namespace palm {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.head_dim = 4;
  c.d_ff = 6;
  c.max_seq_len = 16;
  return c;
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string t = (fs::temp_directory_path() / "palm_st_XXXXXX").string();
    dir_ = ::mkdtemp(t.data());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& f) const { return (fs::path(dir_) / f).string(); }

  // A file from a header JSON and `data_bytes` bytes of data.
  std::string craft(const std::string& name, const std::string& header, std::size_t data_bytes,
                    std::uint64_t header_len_override = 0) {
    std::string bytes(8, '\0');
    const std::uint64_t len = header_len_override ? header_len_override : header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = char(len >> (8 * i));
    bytes += header + std::string(data_bytes, '\0');
    write_text_atomic(path(name), bytes);
    return path(name);
  }

  void expect_error(const std::string& file, const std::string& fragment) {
    try {
      load_model(process_backend(), file);
      ADD_FAILURE() << "no error for " << fragment;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    }
  }

  std::string model_header(const std::function<void(nlohmann::json&)>& edit = nullptr) {
    Weights w(process_backend(), tiny());
    init_weights(*make_backend(), w, 1);
    save_model(path("good.safetensors"), w);
    const std::string bytes = read_file(path("good.safetensors"));
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    auto h = nlohmann::json::parse(bytes.substr(8, n));
    if (edit) edit(h);
    return h.dump();
  }
  std::size_t model_data_bytes() const { return std::size_t(param_count(tiny())) * 4; }

  std::string dir_;
};

TEST_F(Safetensors, RoundTripIsBitExactAndLeavesNoTemporaries) {
  Weights w(process_backend(), tiny());
  init_weights(*make_backend(), w, 42);
  save_model(path("m.safetensors"), w);
  const auto back = load_model(process_backend(), path("m.safetensors"));
  EXPECT_EQ(back->config, w.config);
  EXPECT_EQ(0, std::memcmp(back->arena.data(), w.arena.data(), w.arena.size() * 4));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  // the header follows the documented layout and names
  SafetensorsFile f(path("m.safetensors"));
  EXPECT_EQ(f.tensors().at("layers.0.attn.q").shape, (std::vector<std::int64_t>{8, 8}));
  EXPECT_EQ(f.tensors().at("layers.0.attn.k").shape, (std::vector<std::int64_t>{4, 8}));
  EXPECT_EQ(f.tensors().at("layers.0.mlp.down").shape, (std::vector<std::int64_t>{8, 6}));
  EXPECT_EQ(config_from_json(f.metadata().at("palm.config"), "x"), tiny());
}

TEST_F(Safetensors, ReadsBF16) {
  // 1.0 = 0x3F80, -2.5 = 0xC020 (little-endian bytes)
  const std::string h = R"({"t":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char(std::uint64_t(h.size()) >> (8 * i));
  bytes += h + std::string("\x80\x3F\x20\xC0", 4);
  write_text_atomic(path("bf.safetensors"), bytes);
  SafetensorsFile f(path("bf.safetensors"));
  float v[2];
  f.read_f32(f.tensors().at("t"), v);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.5f);
}

TEST_F(Safetensors, RejectsBadFilesWithOneClearLine) {
  write_text_atomic(path("empty"), "");
  expect_error(path("empty"), "shorter than the 8-byte header length");
  expect_error(path("missing.safetensors"), "cannot open");
  expect_error(craft("len", "{}", 0, 1ull << 40), "does not fit in the file");
  expect_error(craft("json", "{not json", 0), "not valid JSON");
  expect_error(craft("arr", "[1,2]", 0), "not a JSON object");
  expect_error(craft("dtype", R"({"t":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8),
               "unsupported dtype I64");
  expect_error(craft("outside", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
               "outside the data section");
  expect_error(craft("size", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16),
               "need 12");
  expect_error(craft("neg", R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
               "non-negative");
  expect_error(craft("overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               "overlap");
  expect_error(craft("noconfig", R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
               "lacks 'palm.config'");
}

TEST_F(Safetensors, RejectsModelsInconsistentWithTheirConfig) {
  const std::size_t n = model_data_bytes();
  expect_error(craft("badcfg", model_header([](auto& h) {
                 h["__metadata__"]["palm.config"] = R"({"vocab_size": 0})";
               }), n),
               "lacks the field 'd_model'");
  expect_error(craft("neg", model_header([](auto& h) {
                 auto c = nlohmann::json::parse(h["__metadata__"]["palm.config"].template get<std::string>());
                 c["n_layers"] = -1;
                 h["__metadata__"]["palm.config"] = c.dump();
               }), n),
               "n_layers must be positive");
  expect_error(craft("missing", model_header([](auto& h) { h.erase("layers.0.attn.v"); }), n),
               "missing tensor 'layers.0.attn.v'");
  expect_error(craft("shape", model_header([](auto& h) {
                 h["layers.0.attn.k"]["shape"] = {8, 4};
               }), n),
               "has shape [8,4] but the config needs [4,8]");
  expect_error(craft("extra", model_header([](auto& h) {
                 h["bias"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {0, 0}}};
               }), n),
               "unexpected tensor 'bias'");
  // a truncated copy of a good model
  const std::string good = read_file(path("good.safetensors"));
  write_text_atomic(path("trunc"), good.substr(0, good.size() - 100));
  expect_error(path("trunc"), "outside the data section");
}

TEST_F(Safetensors, FailedWriteLeavesTheOldFileIntact) {
  Weights w(process_backend(), tiny());
  init_weights(*make_backend(), w, 1);
  save_model(path("m.safetensors"), w);
  const std::string before = read_file(path("m.safetensors"));
  EXPECT_THROW(write_file_atomic(path("m.safetensors"), [](int) { fail("disk full (simulated)"); }),
               Error);
  EXPECT_EQ(read_file(path("m.safetensors")), before);
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1) << "the temporary file must be removed";
  EXPECT_THROW(save_model(path("no/such/dir/m.safetensors"), w), Error);
}

}  // namespace
}  // namespace palm
