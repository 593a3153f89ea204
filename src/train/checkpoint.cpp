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
#include "kernels/device_buffer.h"
#include "model/model_io.h"
#include "model/safetensors.h"
#include "model/tensor_parallel.h"

namespace palm {

namespace {

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (const auto d : shape) n *= d;
  return n;
}
}  // namespace

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
    // "step-N" and nothing else: a path would let `latest` point into another run
    const bool step_name = name.size() > 5 && name.rfind("step-", 0) == 0 &&
                           name.find_first_not_of("0123456789", 5) == std::string::npos;
    const fs::path dir = fs::path(run) / "checkpoints" / name;
    if (step_name && fs::exists(dir / "state.json", ec)) return dir.string();
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
    std::vector<HostWindow> host;  // the state as the host sees it, while it is written
    const auto tensors = opt.state_tensors();
    host.reserve(tensors.size());
    for (const auto& t : tensors) {
      host.emplace_back(w.arena.backend(), t.data, std::size_t(numel(t.shape)));
      state.push_back({t.name, t.shape, host.back().data()});
    }
    write_safetensors((fs::path(tmp) / "optimizer.safetensors").string(), {{"palm.optimizer", opt.config().kind}}, state);
    fs::create_directories(fs::path(tmp) / "tokenizer");
    for (const char* f : {"tokenizer.model", "tokenizer.json"})
      fs::copy_file(fs::path(tokenizer_dir) / f, fs::path(tmp) / "tokenizer" / f);
    write_text_atomic((fs::path(tmp) / "state.json").string(), state_json);  // last: marks completeness
    ::chmod(tmp.c_str(), 0755);
    replace_directory(tmp, final_dir);  // a re-run step after a rollback replaces its directory atomically
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

namespace {

std::string shard_name(const char* what, int r, int T, int i, int n) {
  std::string s = std::string(what);
  if (T > 1) s += "-tp-" + std::to_string(r) + "-of-" + std::to_string(T);
  if (n > 0) s += "-shard-" + std::to_string(i) + "-of-" + std::to_string(n);
  return s + ".safetensors";
}

// "adafactor.m.layers.0.attn.q" -> "layers.0.attn.q"; a parameter name stays itself
std::string param_of(const std::string& name, const ModelConfig& g) {
  for (const auto& p : param_list(g))
    if (name == p.name) return name;
  const std::size_t a = name.find('.');
  const std::size_t b = a == std::string::npos ? a : name.find('.', a + 1);
  PALM_CHECK(b != std::string::npos, "unknown tensor '", name, "' in a checkpoint");
  return name.substr(b + 1);
}

const ParamInfo& param_info(const std::string& param, const ModelConfig& g) {
  for (const auto& p : param_list(g))
    if (p.name == param) return p;
  PALM_CHECK(false, "no parameter '", param, "' in the model");
  return param_list(g).front();
}

// The tensors of a checkpoint: for each name, the file holding it per tensor rank of the
// layout that wrote it (one file when T = 1).
struct Sources {
  int T = 1;
  ModelConfig global;
  std::map<std::string, std::vector<std::string>> files;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> open;
  SafetensorsFile& file(const std::string& path) {
    auto& f = open[path];
    if (!f) f = std::make_unique<SafetensorsFile>(path);
    return *f;
  }
  // the global tensor `name`, assembled from the writers' shards
  std::vector<float> global_tensor(const std::string& name) {
    const auto it = files.find(name);
    PALM_CHECK(it != files.end(), "the checkpoint has no tensor '", name, "' (was the run made with another --optimizer?)");
    const ParamInfo& p = param_info(param_of(name, global), global);
    std::vector<float> g(static_cast<std::size_t>(p.numel));
    for (int r = 0; r < T; ++r) {
      SafetensorsFile& f = file(it->second[std::size_t(T == 1 ? 0 : r)]);
      const auto t = f.tensors().find(name);
      PALM_CHECK(t != f.tensors().end(), f.path(), ": missing tensor '", name, "'");
      const TpSlice s = tp_slice(name, global, r, T);
      std::int64_t n = 1;
      for (auto d : t->second.shape) n *= d;
      std::vector<float> local(static_cast<std::size_t>(n));
      f.read_f32(t->second, local.data());
      if (T == 1) {
        PALM_CHECK(t->second.shape == p.shape, f.path(), ": tensor '", name, "' has the wrong shape");
        return local;
      }
      tp_insert(local.data(), p.shape, s, g.data());
      if (s.kind == SliceKind::kAll) break;  // replicated: any rank's copy is the tensor
    }
    return g;
  }
};

Sources weight_sources(const fs::path& dir) {
  Sources src;
  const fs::path index = dir / "model.index.json";
  if (fs::exists(index)) {
    const auto j = nlohmann::json::parse(read_file(index.string()), nullptr, false);
    PALM_CHECK(!j.is_discarded() && j.contains("tp") && (j.contains("files") || j.contains("tensors")) && j.contains("config"), index.string(),
               ": not a palm model index");
    src.T = j["tp"].get<int>();
    src.global = config_from_json(j["config"].dump(), index.string());
    if (j.contains("tensors")) {  // --shard full: each tensor in its owner's file (per tensor rank)
      for (const auto& [name, files] : j["tensors"].items())
        for (const auto& f : files) src.files[name].push_back((dir / f.get<std::string>()).string());
    } else {
      for (const auto& p : param_list(src.global))
        for (const auto& f : j["files"]) src.files[p.name].push_back((dir / f.get<std::string>()).string());
    }
  } else {
    const std::string path = (dir / "model.safetensors").string();
    src.global = read_model_config(path);
    for (const auto& p : param_list(src.global)) src.files[p.name] = {path};
  }
  return src;
}

}  // namespace

std::unique_ptr<Weights> load_checkpoint_weights(Backend& be, const std::string& dir) {
  Sources src = weight_sources(dir);
  if (fs::exists(fs::path(dir) / "model.safetensors")) return load_model(be, (fs::path(dir) / "model.safetensors").string());
  auto w = std::make_unique<Weights>(be, src.global);
  for (const auto& p : param_list(src.global)) {
    const auto g = src.global_tensor(p.name);
    be.copy_to_device(w->arena.data() + p.offset, g.data(), sizeof(float) * g.size());
  }
  return w;
}

std::string load_checkpoint(const std::string& dir, Weights& w, Optimizer& opt, const TpLayout* layout) {
  const fs::path d(dir);
  Sources src = weight_sources(d);
  const ModelConfig& want = layout ? layout->global : w.config;
  PALM_CHECK(src.global == want, dir, ": the checkpoint's model config differs from the run's (",
             config_to_json(src.global), " vs ", config_to_json(want), ")");
  const int r = layout ? layout->rank : 0, T = layout ? layout->size : 1;
  Backend& be = w.arena.backend();
  // this rank's slice of a global tensor, cut on the host and copied to the backend
  auto place = [&](const std::string& name, const std::vector<float>& g, float* local, std::int64_t local_numel) {
    const ParamInfo& p = param_info(param_of(name, want), want);
    HostWindow host(be, local, std::size_t(local_numel), /*load=*/false);
    tp_extract(g.data(), p.shape, tp_slice(name, want, r, T), host.data());
    host.commit();
  };
  if (src.T == 1 && T == 1 && fs::exists(d / "model.safetensors")) {
    read_model_into((d / "model.safetensors").string(), w);
  } else {
    for_each_param(w.config, [&](const ParamInfo& p) {
      place(p.name, src.global_tensor(p.name), w.arena.data() + p.offset, p.numel);
    });
  }
  // optimizer state: one optimizer.safetensors, or the shard files its index names
  Sources opt_src;
  opt_src.global = want;
  const fs::path index = d / "optimizer.index.json";
  if (fs::exists(index)) {
    const auto j = nlohmann::json::parse(read_file(index.string()), nullptr, false);
    PALM_CHECK(!j.is_discarded() && j.contains("tensors") && j["tensors"].is_object(), index.string(),
               ": not a palm optimizer index");
    opt_src.T = j.value("tp", 1);
    for (const auto& [name, f] : j["tensors"].items()) {
      if (f.is_string()) opt_src.files[name] = {(d / f.get<std::string>()).string()};
      else
        for (const auto& x : f) opt_src.files[name].push_back((d / x.get<std::string>()).string());
    }
  } else {
    const std::string path = (d / "optimizer.safetensors").string();
    for (const auto& [name, info] : opt_src.file(path).tensors()) opt_src.files[name] = {path};
  }
  for (const auto& t : opt.state_tensors()) {
    if (opt_src.T == 1 && T == 1) {
      SafetensorsFile& f = opt_src.file(opt_src.files.count(t.name) ? opt_src.files[t.name][0] : (d / "optimizer.safetensors").string());
      const auto it = f.tensors().find(t.name);
      PALM_CHECK(it != f.tensors().end(), f.path(), ": missing optimizer tensor '", t.name,
                 "' (was the run made with another --optimizer?)");
      PALM_CHECK(it->second.shape == t.shape, f.path(), ": optimizer tensor '", t.name, "' has the wrong shape");
      HostWindow host(be, t.data, std::size_t(numel(t.shape)), /*load=*/false);
      f.read_f32(it->second, host.data());
      host.commit();
    } else {
      place(t.name, opt_src.global_tensor(t.name), t.data, numel(t.shape));
    }
  }
  return read_file((d / "state.json").string());
}

void save_checkpoint_sharded(Comm& world, bool leader, bool shard_writer, int shard, int shards, const std::string& run,
                             std::int64_t step, const Weights& w, Optimizer& opt, const std::string& state_json,
                             const std::string& tokenizer_dir, const std::string& tokenizer_sha256, std::int64_t keep,
                             const TpLayout& layout, const std::vector<bool>& weights_owned) {
  const bool fsdp = !weights_owned.empty();
  const fs::path root = fs::path(run) / "checkpoints";
  const fs::path tmp = root / (".step-" + std::to_string(step) + ".tmp.sharded");  // hidden until renamed
  const int T = layout.size, r = layout.rank;
  std::error_code ec;
  if (leader) {
    fs::create_directories(root);
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
  }
  world.barrier();
  if (shard_writer) {
    std::vector<TensorToWrite> state;
    std::vector<HostWindow> host;  // the state as the host sees it, while it is written
    const auto tensors = opt.state_tensors();
    host.reserve(tensors.size() + w.config.n_layers * 4 + 2);
    for (const auto& t : tensors) {
      host.emplace_back(w.arena.backend(), t.data, std::size_t(numel(t.shape)));
      state.push_back({t.name, t.shape, host.back().data()});
    }
    write_safetensors((tmp / shard_name("optimizer", r, T, shard, shards)).string(), {{"palm.optimizer", opt.config().kind}},
                      state);
    if (fsdp) {  // the weights this rank owns
      std::vector<TensorToWrite> mine;
      std::size_t i = 0;
      for_each_param(w.config, [&](const ParamInfo& p) {
        if (!weights_owned[i++]) return;
        host.emplace_back(w.arena.backend(), w.arena.data() + p.offset, std::size_t(p.numel));
        mine.push_back({p.name, p.shape, host.back().data()});
      });
      write_safetensors((tmp / shard_name("model", r, T, shard, shards)).string(), {{kTokenizerShaKey, tokenizer_sha256}}, mine);
    } else if (T > 1 && shard == 0) {  // each tensor rank's weights: no gather through one process
      save_model((tmp / shard_name("model", r, T, 0, 0)).string(), w, {{kTokenizerShaKey, tokenizer_sha256}});
    }
  }
  world.barrier();
  if (leader) {
    try {
      nlohmann::json index = {{"format", "palm-optimizer-shards"}, {"optimizer", opt.config().kind}, {"shards", shards}, {"tp", T}};
      index["tensors"] = nlohmann::json::object();
      for (int tr = 0; tr < T; ++tr)
        for (int s = 0; s < shards; ++s) {
          const std::string f = shard_name("optimizer", tr, T, s, shards);
          const SafetensorsFile sf((tmp / f).string());  // validates every shard before it becomes visible
          for (const auto& [name, info] : sf.tensors()) {
            if (T == 1) index["tensors"][name] = f;
            else {
              if (!index["tensors"].contains(name)) index["tensors"][name] = nlohmann::json::array();
              index["tensors"][name].push_back(f);
            }
          }
        }
      write_text_atomic((tmp / "optimizer.index.json").string(), index.dump(2) + "\n");
      if (fsdp) {
        nlohmann::json tensors = nlohmann::json::object();
        for (int tr = 0; tr < T; ++tr)
          for (int sh = 0; sh < shards; ++sh) {
            const std::string f = shard_name("model", tr, T, sh, shards);
            const SafetensorsFile sf((tmp / f).string());
            for (const auto& [name, info] : sf.tensors()) {
              if (!tensors.contains(name)) tensors[name] = nlohmann::json::array();
              tensors[name].push_back(f);
            }
          }
        write_text_atomic((tmp / "model.index.json").string(),
                          nlohmann::json({{"format", "palm-model-shards"}, {"tp", T},
                                          {"config", nlohmann::json::parse(config_to_json(layout.global))}, {"tensors", tensors}})
                                  .dump(2) +
                              "\n");
      } else if (T == 1) {
        save_model((tmp / "model.safetensors").string(), w, {{kTokenizerShaKey, tokenizer_sha256}});
      } else {
        nlohmann::json files = nlohmann::json::array();
        for (int tr = 0; tr < T; ++tr) {
          files.push_back(shard_name("model", tr, T, 0, 0));
          (void)SafetensorsFile((tmp / files.back().get<std::string>()).string());
        }
        write_text_atomic((tmp / "model.index.json").string(),
                          nlohmann::json({{"format", "palm-model-tp-shards"}, {"tp", T}, {"config", nlohmann::json::parse(config_to_json(layout.global))},
                                          {"files", files}})
                                  .dump(2) +
                              "\n");
      }
      fs::create_directories(tmp / "tokenizer");
      for (const char* f : {"tokenizer.model", "tokenizer.json"})
        fs::copy_file(fs::path(tokenizer_dir) / f, tmp / "tokenizer" / f);
      write_text_atomic((tmp / "state.json").string(), state_json);  // last: marks completeness
      ::chmod(tmp.c_str(), 0755);
      const std::string final_dir = checkpoint_dir(run, step);
      replace_directory(tmp.string(), final_dir);
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
