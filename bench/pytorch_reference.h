// The PyTorch peer the benchmarks measure palm against (tools/palm_ref.py), configured as
// a PyTorch expert would on this CPU: tcmalloc preloaded (libtcmalloc-minimal4),
// OMP_WAIT_POLICY=PASSIVE (no spinning threads stealing the cores between ops), OpenBLAS
// choosing its own kernels for this CPU (palm_ref.py checks its products and fails
// otherwise; then the environment's OpenBLAS setting is used). palm_ref.py itself runs
// under torch.inference_mode().
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace palm {

// Runs `palm_ref.py SUBCOMMAND_AND_ARGS` and returns its last JSON line, or a null json
// with *note saying why (PyTorch missing, the run failed). On success *note names the
// configuration used ("tcmalloc, OMP_WAIT_POLICY=PASSIVE, OpenBLAS auto-detected kernels").
nlohmann::json run_pytorch_reference(const std::string& args, std::string* note);

}  // namespace palm
