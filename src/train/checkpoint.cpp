#include "train/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

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
  // tensor name -> file: one optimizer.safetensors, or the shards named by the index
  const fs::path index = fs::path(dir) / "optimizer.index.json";
  std::map<std::string, std::string> file_of;
  if (fs::exists(index)) {
    const auto j = nlohmann::json::parse(read_file(index.string()), nullptr, false);
    PALM_CHECK(!j.is_discarded() && j.contains("tensors") && j["tensors"].is_object(), index.string(),
               ": not a palm optimizer index");
    for (const auto& [name, file] : j["tensors"].items()) file_of[name] = (fs::path(dir) / file.get<std::string>()).string();
  }
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  for (const auto& t : opt.state_tensors()) {
    const auto at = file_of.find(t.name);
    const std::string path = at != file_of.end() ? at->second : (fs::path(dir) / "optimizer.safetensors").string();
    auto& f = files[path];
    if (!f) f = std::make_unique<SafetensorsFile>(path);
    const auto it = f->tensors().find(t.name);
    PALM_CHECK(it != f->tensors().end(), f->path(), ": missing optimizer tensor '", t.name,
               "' (was the run made with another --optimizer?)");
    PALM_CHECK(it->second.shape == t.shape, f->path(), ": optimizer tensor '", t.name, "' has the wrong shape");
    f->read_f32(it->second, t.data);
  }
  return read_file((fs::path(dir) / "state.json").string());
}

void save_checkpoint_sharded(Comm& world, bool leader, bool shard_writer, int shard, int shards, const std::string& run,
                             std::int64_t step, const Weights& w, Optimizer& opt, const std::string& state_json,
                             const std::string& tokenizer_dir, const std::string& tokenizer_sha256, std::int64_t keep) {
  const fs::path root = fs::path(run) / "checkpoints";
  const fs::path tmp = root / (".step-" + std::to_string(step) + ".tmp.sharded");  // hidden until renamed
  std::error_code ec;
  if (leader) {
    fs::create_directories(root);
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
  }
  world.barrier();
  const std::string shard_file = "optimizer-shard-" + std::to_string(shard) + "-of-" + std::to_string(shards) + ".safetensors";
  if (shard_writer) {
    std::vector<TensorToWrite> state;
    for (const auto& t : opt.state_tensors()) state.push_back({t.name, t.shape, t.data});
    write_safetensors((tmp / shard_file).string(), {{"palm.optimizer", opt.config().kind}}, state);
  }
  world.barrier();
  if (leader) {
    try {
      nlohmann::json index = {{"format", "palm-optimizer-shards"}, {"optimizer", opt.config().kind}, {"shards", shards}};
      index["tensors"] = nlohmann::json::object();
      for (int s = 0; s < shards; ++s) {
        const std::string f = "optimizer-shard-" + std::to_string(s) + "-of-" + std::to_string(shards) + ".safetensors";
        const SafetensorsFile sf((tmp / f).string());  // validates every shard before it becomes visible
        for (const auto& [name, info] : sf.tensors()) index["tensors"][name] = f;
      }
      write_text_atomic((tmp / "optimizer.index.json").string(), index.dump(2) + "\n");
      save_model((tmp / "model.safetensors").string(), w, {{kTokenizerShaKey, tokenizer_sha256}});
      fs::create_directories(tmp / "tokenizer");
      for (const char* f : {"tokenizer.model", "tokenizer.json"})
        fs::copy_file(fs::path(tokenizer_dir) / f, tmp / "tokenizer" / f);
      write_text_atomic((tmp / "state.json").string(), state_json);  // last: marks completeness
      ::chmod(tmp.c_str(), 0755);
      const std::string final_dir = checkpoint_dir(run, step);
      if (fs::exists(final_dir, ec)) fs::remove_all(final_dir, ec);
      fs::rename(tmp, final_dir);
      write_text_atomic((fs::path(run) / "latest").string(), "step-" + std::to_string(step) + "\n");
      if (keep > 0) {
        const auto steps = list_checkpoints(run);
        for (std::size_t i = 0; i + std::size_t(keep) < steps.size(); ++i) fs::remove_all(checkpoint_dir(run, steps[i]), ec);
      }
    } catch (const std::exception& e) {
      fs::remove_all(tmp, ec);
      fail(str_cat("checkpoint at step ", step, " failed (the previous checkpoint is intact): ", e.what()));
    }
  }
  world.barrier();
}

}  // namespace palm
