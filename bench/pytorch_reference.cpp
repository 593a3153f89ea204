#include "pytorch_reference.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace palm {

nlohmann::json run_pytorch_reference(const std::string& args, std::string* note) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    *note = "PyTorch (python3-torch) not installed: reference skipped";
    return nullptr;
  }
  const char* env_tools = std::getenv("PALM_TOOLS_DIR");
  const std::string tools = env_tools ? env_tools : std::string(PALM_SOURCE_DIR) + "/tools";
  const char* tcmalloc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";
  std::string env = "OMP_WAIT_POLICY=PASSIVE ";
  if (FILE* f = std::fopen(tcmalloc, "r")) {
    std::fclose(f);
    env += std::string("LD_PRELOAD=") + tcmalloc + " ";
  }
  for (const char* unset : {"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ", ""}) {
    const std::string cmd = fmt::format("{}{} /usr/bin/python3 {}/palm_ref.py {} 2>/dev/null", unset, env, tools, args);
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) break;
    std::string out;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, p)) out += buf;
    if (::pclose(p) == 0 && out.find('{') != std::string::npos) {
      *note = fmt::format("{}OMP_WAIT_POLICY=PASSIVE, {}", env.find("LD_PRELOAD") != std::string::npos ? "tcmalloc, " : "",
                          *unset ? "OpenBLAS auto-detected kernels" : "OpenBLAS as configured here");
      return nlohmann::json::parse(out.substr(out.rfind('{')));
    }
  }
  *note = "the PyTorch reference failed (run tools/palm_ref.py " + args.substr(0, args.find(' ')) + " by hand)";
  return nullptr;
}

}  // namespace palm
