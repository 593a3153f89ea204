#include "llama_cpp_compare.h"

#include <fmt/format.h>
#include <stdlib.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "gguf_writer.h"

namespace palm {

namespace fs = std::filesystem;

namespace {

std::string package_dir() {
  const char* env = std::getenv("PALM_LLAMA_CPP_DIR");  // another checkout's bench/llama_cpp
  return env && *env ? env : std::string(PALM_SOURCE_DIR) + "/bench/llama_cpp";
}

std::string run_capture(const std::string& cmd, int* status) {
  FILE* f = ::popen(cmd.c_str(), "r");
  PALM_CHECK(f != nullptr, "cannot run ", cmd);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  *status = ::pclose(f);
  return out;
}

std::string file_of(const fs::path& dir, std::size_t i) {
  return (dir / (std::string("model-") + LlamaCpp::kFormats[i] + ".gguf")).string();
}

}  // namespace

std::string LlamaCpp::unavailable() {
  int st = 0;
  run_capture("node --version >/dev/null 2>&1", &st);
  if (st != 0) return "llama.cpp comparison skipped: node (Node.js) is not installed";
  if (!fs::exists(package_dir() + "/node_modules/node-llama-cpp/package.json") ||
      !fs::exists(package_dir() + "/node_modules/@node-llama-cpp/linux-x64"))
    return "llama.cpp comparison skipped: the npm package node-llama-cpp is not installed in " + package_dir() +
           " (make deps installs it: npm ci --omit=optional there)";
  return "";
}

LlamaCpp::LlamaCpp(const Weights& w, int threads, std::int64_t prompt, std::int64_t tokens)
    : threads_(threads), prompt_(prompt), tokens_(tokens) {
  const std::string why = unavailable();
  PALM_CHECK(why.empty(), why);
  // PALM_GGUF_DIR: write the files there and keep them (to run llama.cpp's own tools on them)
  const char* keep_dir = std::getenv("PALM_GGUF_DIR");
  keep_ = keep_dir && *keep_dir;
  if (keep_) {
    dir_ = keep_dir;
    fs::create_directories(dir_);
  } else {
    std::string tmpl = (fs::temp_directory_path() / "palm_gguf_XXXXXX").string();
    PALM_CHECK(::mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary directory in ", fs::temp_directory_path().string());
    dir_ = tmpl;
  }
  try {
    for (std::size_t i = 0; i < 3; ++i) {
      fmt::print(stderr, "writing {}...\n", file_of(dir_, i));
      write_llama_gguf(w, parse_gguf_type(kFormats[i]), file_of(dir_, i));
    }
  } catch (...) {
    if (!keep_) fs::remove_all(dir_);
    throw;
  }
}

LlamaCpp::~LlamaCpp() {
  std::error_code ec;
  if (!keep_) fs::remove_all(dir_, ec);
}

LlamaCppRun LlamaCpp::run(std::size_t i) {
  const std::string file = file_of(dir_, i);
  // UV_THREADPOOL_SIZE=1: node-llama-cpp decodes on libuv's worker pool; with its default 4
  // workers beside llama.cpp's own threads, a 2-core machine lost 6-12 ms per token to
  // scheduling (bench-medium f32: 29 ms per token against 17 with one worker). One
  // worker gives llama.cpp the machine, as its own command-line tools have it.
  int st = 0;
  const std::string out = run_capture(fmt::format("UV_THREADPOOL_SIZE=1 node '{}/run.mjs' '{}' {} {} {} 2>&1", package_dir(),
                                                  file, threads_, prompt_, tokens_),
                                      &st);
  const std::size_t line = out.rfind("{\"engine\"");
  const auto j = nlohmann::json::parse(line == std::string::npos ? std::string() : out.substr(line), nullptr, false);
  PALM_CHECK(st == 0 && !j.is_discarded(), "llama.cpp failed on ", file, ": ",
             out.substr(out.size() > 2000 ? out.size() - 2000 : 0));
  engine_ = j["engine"].get<std::string>();
  return {kFormats[i], double(fs::file_size(file)), j["prompt_tokens_per_s"].get<double>(),
          j["decode_tokens_per_s"].get<double>()};
}

}  // namespace palm
