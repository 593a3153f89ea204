#include "train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "model/model_io.h"
#include "model/safetensors.h"

namespace palm {

namespace fs = std::filesystem;

std::string checkpoint_dir(const std::string& run, std::int64_t step) {
  return (fs::path(run) / "checkpoints" / ("step-" + std::to_string(step))).string();
}

std::vector<std::int64_t> list_checkpoints(const std::string& run) {
  std::vector<std::int64_t> steps;
  std::error_code ec;
  const fs::path dir = fs::path(run) / "checkpoints";
  if (!fs::is_directory(dir, ec)) return steps;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !fs::exists(e.path() / "state.json")) continue;
    try {
      steps.push_back(std::stoll(name.substr(5)));
    } catch (const std::exception&) {
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::string latest_checkpoint(const std::string& run) {
  const fs::path latest = fs::path(run) / "latest";
  std::error_code ec;
  if (fs::exists(latest, ec)) {
    std::string name = read_file(latest.string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    const fs::path dir = fs::path(run) / "checkpoints" / name;
    if (fs::exists(dir / "state.json", ec)) return dir.string();
  }
  const auto steps = list_checkpoints(run);
  return steps.empty() ? std::string() : checkpoint_dir(run, steps.back());
}

void save_checkpoint(const std::string& run, std::int64_t step, const Weights& w, Optimizer& opt,
                     const std::string& state_json, const std::string& tokenizer_dir,
                     const std::string& tokenizer_sha256, std::int64_t keep) {
  const fs::path root = fs::path(run) / "checkpoints";
  fs::create_directories(root);
  const std::string final_dir = checkpoint_dir(run, step);
  std::string tmp = (root / (".step-" + std::to_string(step) + ".tmp.XXXXXX")).string();
  PALM_CHECK(::mkdtemp(tmp.data()) != nullptr, root.string(), ": cannot create a checkpoint directory: ",
             std::strerror(errno));
  std::error_code ec;
  try {
    save_model((fs::path(tmp) / "model.safetensors").string(), w, {{kTokenizerShaKey, tokenizer_sha256}});
    std::vector<TensorToWrite> state;
    for (const auto& t : opt.state_tensors()) state.push_back({t.name, t.shape, t.data});
    write_safetensors((fs::path(tmp) / "optimizer.safetensors").string(), {{"palm.optimizer", opt.config().kind}}, state);
    fs::create_directories(fs::path(tmp) / "tokenizer");
    for (const char* f : {"tokenizer.model", "tokenizer.json"})
      fs::copy_file(fs::path(tokenizer_dir) / f, fs::path(tmp) / "tokenizer" / f);
    write_text_atomic((fs::path(tmp) / "state.json").string(), state_json);  // last: marks completeness
    ::chmod(tmp.c_str(), 0755);
    if (fs::exists(final_dir, ec)) fs::remove_all(final_dir, ec);  // a re-run step after a rollback
    fs::rename(tmp, final_dir);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    fail(str_cat("checkpoint at step ", step, " failed (the previous checkpoint is intact): ", e.what()));
  }
  write_text_atomic((fs::path(run) / "latest").string(), "step-" + std::to_string(step) + "\n");
  if (keep > 0) {
    const auto steps = list_checkpoints(run);
    for (std::size_t i = 0; i + std::size_t(keep) < steps.size(); ++i) fs::remove_all(checkpoint_dir(run, steps[i]), ec);
  }
}

std::string load_checkpoint(const std::string& dir, Weights& w, Optimizer& opt) {
  const auto loaded = load_model((fs::path(dir) / "model.safetensors").string());
  PALM_CHECK(loaded->config == w.config, dir, ": the checkpoint's model config differs from the run's (",
             config_to_json(loaded->config), " vs ", config_to_json(w.config), ")");
  std::memcpy(w.arena.data(), loaded->arena.data(), w.arena.size() * sizeof(float));
  const SafetensorsFile f((fs::path(dir) / "optimizer.safetensors").string());
  for (const auto& t : opt.state_tensors()) {
    const auto it = f.tensors().find(t.name);
    PALM_CHECK(it != f.tensors().end(), f.path(), ": missing optimizer tensor '", t.name,
               "' (was the run made with another --optimizer?)");
    PALM_CHECK(it->second.shape == t.shape, f.path(), ": optimizer tensor '", t.name, "' has the wrong shape");
    f.read_f32(it->second, t.data);
  }
  return read_file((fs::path(dir) / "state.json").string());
}

}  // namespace palm
