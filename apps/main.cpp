// palm: one binary, git-style subcommands. Each subcommand parses its options and calls
// src/; errors become one "palm: error: ..." line on stderr and exit status 1.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "base/check.h"
#include "base/file_util.h"
#include "common.h"
#include "kernels/backend.h"
#include "model/model_io.h"
#include "model/params.h"
#include "train/checkpoint.h"

#include <filesystem>

namespace palm {

void ConfigChoice::add_to(CLI::App* cmd) {
  auto* p = cmd->add_option("--preset", preset, "Model preset: " + preset_list());
  auto* c = cmd->add_option("--config", config_file, "Model config JSON (fields of docs/model.md)");
  p->excludes(c);
  c->excludes(p);
}

ModelConfig ConfigChoice::resolve() const {
  PALM_CHECK(!preset.empty() || !config_file.empty(), "give --preset NAME or --config FILE.json");
  return preset.empty() ? load_config_file(config_file) : palm::preset(preset);
}

CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
          return fmt::format("must be a finite number in [{}, {}], got '{}'", lo, hi, s);
        return "";
      },
      fmt::format("NUMBER in [{}, {}]", lo, hi));
}

CLI::Validator integer_in(std::int64_t lo, std::int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (end == s.c_str() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
          return fmt::format("must be an integer in [{}, {}], got '{}'", lo, hi, s);
        return "";
      },
      fmt::format("INT in [{}, {}]", lo, hi));
}

std::string resolve_api_key(const std::string& key, const std::string& key_file) {
  if (!key_file.empty()) {
    std::string k = read_file(key_file);
    k = k.substr(0, k.find('\n'));
    while (!k.empty() && (k.back() == '\r' || k.back() == ' ')) k.pop_back();
    PALM_CHECK(!k.empty(), key_file, ": no API key on its first line");
    return k;
  }
  if (const char* env = std::getenv("PALM_API_KEY"); key.empty() && env && *env) return env;
  return key;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.2f} {}", b, units[u]);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f}K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string preset_list() {
  std::string r;
  for (const auto& n : preset_names()) r += (r.empty() ? "" : ", ") + n;
  return r;
}

std::string palm_version_string() { return std::string("palm ") + PALM_VERSION + " (" + PALM_GIT_COMMIT + ")"; }

}  // namespace palm

int main(int argc, char** argv) {
  CLI::App app{"palm: train, evaluate and serve PaLM-family language models"};
  app.set_version_flag("--version", palm::palm_version_string());
  app.require_subcommand(1);
  app.fallthrough();  // --backend may follow the subcommand
  palm::register_info(app);
  palm::register_init(app);
  palm::register_score(app);
  palm::register_tokenizer(app);
  palm::register_data(app);
  palm::register_train(app);
  palm::register_generate(app);
  palm::register_eval(app);
  palm::register_card(app);
  palm::register_serve(app);
  palm::register_dashboard(app);
  palm::register_export(app);
  palm::register_launch(app);
  palm::register_bench(app);
  // One choice of backend for the whole command, before or after the subcommand (the
  // subcommands inherit fallthrough from the app: set above, before they were added); it
  // is made (and a missing device reported) as soon as it is parsed, before any work starts.
  app.add_option_function<std::string>("--backend", [](const std::string& name) { palm::set_default_backend(name); },
                                       "Compute backend: cpu or cuda (default: cuda where built in and a device is "
                                       "present, else cpu); palm info lists them")
      ->trigger_on_parse()
      ->check(CLI::IsMember({"cpu", "cuda", "cpu_guarded"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const palm::Error& e) {
    std::fprintf(stderr, "palm: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "palm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
