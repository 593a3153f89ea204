// palm export: the single interchange file of a run's newest checkpoint, whatever layout
// (processes, optimizer shards) wrote it.
#include <fmt/format.h>

#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "common.h"
#include "model/model_io.h"
#include "train/checkpoint.h"

namespace palm {

namespace {

struct ExportCli {
  std::string run, out;
};

void run_export(const ExportCli& c) {
  namespace fs = std::filesystem;
  PALM_CHECK(!fs::exists(c.out) || !fs::is_directory(c.out), c.out, " is a directory; give the file to write");
  // a checkpoint directory: the run's newest, or the one given
  std::string dir = c.run;
  if (!fs::exists(fs::path(dir) / "state.json")) dir = latest_checkpoint(c.run);
  PALM_CHECK(!dir.empty() && fs::exists(fs::path(dir) / "state.json"), c.run, ": neither a run with a complete checkpoint nor a checkpoint");
  // the weights of any layout (one file, or tensor-parallel shards reassembled)
  const auto w = load_checkpoint_weights(process_backend(), dir);
  const fs::path one = fs::path(dir) / "model.safetensors";
  std::map<std::string, std::string> meta;
  if (fs::exists(one)) {
    meta = read_model_metadata(one.string());
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("model-", 0) == 0 && e.path().extension() == ".safetensors")
        meta = read_model_metadata(e.path().string());  // every shard carries the run's metadata
  }
  save_model(c.out, *w, meta);  // atomic (temporary file + rename)
  fmt::print(stderr, "exported {} ({} parameters) to {}\n", dir, param_count(w->config), c.out);
}

}  // namespace

void register_export(CLI::App& app) {
  auto c = std::make_shared<ExportCli>();
  auto* cmd = app.add_subcommand("export", "Write a run's newest weights as one safetensors file (any layout)");
  cmd->add_option("run", c->run, "Run or checkpoint directory")->required();
  cmd->add_option("--out", c->out, "The safetensors file to write")->required();
  cmd->callback([c] { run_export(*c); });
}

}  // namespace palm
