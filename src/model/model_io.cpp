#include "model/model_io.h"

#include <set>

#include "base/check.h"
#include "kernels/device_buffer.h"
#include "model/safetensors.h"

namespace palm {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

void save_model(const std::string& path, const Weights& w,
                const std::map<std::string, std::string>& extra_metadata) {
  std::vector<TensorToWrite> tensors;
  const HostWindow host(w.arena.backend(), w.arena.data(), w.arena.size());  // the backend's memory, seen from here
  for_each_param(w.config, [&](const ParamInfo& p) { tensors.push_back({p.name, p.shape, host.data() + p.offset}); });
  std::map<std::string, std::string> meta = extra_metadata;
  meta[kConfigKey] = config_to_json(w.config);
  meta["format"] = "pt";
  write_safetensors(path, meta, tensors);
}

namespace {

ModelConfig config_of(const SafetensorsFile& f) {
  const auto it = f.metadata().find(kConfigKey);
  PALM_CHECK(it != f.metadata().end(), f.path(), ": not a palm model: __metadata__ lacks '",
             kConfigKey, "'");
  return config_from_json(it->second, f.path() + " (" + kConfigKey + ")");
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

ModelConfig read_model_config(const std::string& path) { return config_of(SafetensorsFile(path)); }

std::map<std::string, std::string> read_model_metadata(const std::string& path) {
  return SafetensorsFile(path).metadata();
}

void read_model_into(const std::string& path, Weights& w) {
  const SafetensorsFile f(path);
  const ModelConfig c = config_of(f);
  PALM_CHECK(c == w.config, path, ": its model config differs from the one it is read into (", config_to_json(c), " vs ",
             config_to_json(w.config), ")");
  Backend& be = w.arena.backend();
  std::set<std::string> expected;
  for_each_param(c, [&](const ParamInfo& p) {
    expected.insert(p.name);
    const auto it = f.tensors().find(p.name);
    PALM_CHECK(it != f.tensors().end(), path, ": missing tensor '", p.name, "'");
    PALM_CHECK(it->second.shape == p.shape, path, ": tensor '", p.name, "' has shape ",
               shape_str(it->second.shape), " but the config needs ", shape_str(p.shape));
    HostWindow host(be, w.arena.data() + p.offset, std::size_t(p.numel), /*load=*/false);
    f.read_f32(it->second, host.data());
    host.commit();
  });
  for (const auto& [name, t] : f.tensors()) {
    PALM_CHECK(expected.count(name), path, ": unexpected tensor '", name, "'");
  }
}

std::unique_ptr<Weights> load_model(Backend& be, const std::string& path) {
  auto w = std::make_unique<Weights>(be, read_model_config(path));
  read_model_into(path, *w);
  return w;
}

}  // namespace palm
