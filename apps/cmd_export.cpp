// palm export: the single interchange file of a run's newest checkpoint, whatever layout
// (processes, optimizer shards) wrote it.
#include <fmt/format.h>

#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "common.h"
#include "model/model_io.h"

namespace palm {

namespace {

struct ExportCli {
  std::string run, out;
};

void run_export(const ExportCli& c) {
  namespace fs = std::filesystem;
  PALM_CHECK(!fs::exists(c.out) || !fs::is_directory(c.out), c.out, " is a directory; give the file to write");
  const std::string model = resolve_model(c.run);
  const auto w = load_model(model);  // validated: shapes, sizes, finite header
  std::map<std::string, std::string> meta = read_model_metadata(model);
  save_model(c.out, *w, meta);  // atomic (temporary file + rename)
  fmt::print(stderr, "exported {} ({} parameters) to {}\n", model, param_count(w->config), c.out);
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
