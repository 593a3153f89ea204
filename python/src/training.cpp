// palm.train and palm.eval: the trainer and the evaluation harness, in-process.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <pthread.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "base/check.h"
#include "base/file_util.h"
#include "base/sha256.h"
#include "base/signals.h"
#include "base/threads.h"
#include "bindings.h"
#include "eval/evaluate.h"
#include "python_model.h"
#include "train/trainer.h"

namespace palm::py_bindings {
namespace {

namespace fs = std::filesystem;

py::object json_to_python(const std::string& text) { return py::module_::import("json").attr("loads")(text); }

// Trains with the GIL released and signals deferred (bindings.h's Computing). Each step's
// metrics go to on_step (with the GIL). A Ctrl-C (or SIGTERM), taken by base/signals.h's
// watcher as in palm train, finishes the step in progress, writes a checkpoint and
// returns; then the signal is handed back to Python (KeyboardInterrupt by default;
// SIGTERM's default ends the process). One that reaches Python all the same (a thread of
// the caller's takes it) is noticed in the callback, with the same effect. An exception
// in on_step stops the run the same way and is re-raised. Other signals wait until the
// run returns.
std::int64_t train(const std::string& preset, const std::string& data, const std::string& out, std::int64_t steps,
                   std::int64_t batch_size, std::int64_t seq_len, std::uint64_t seed, std::int64_t checkpoint_every,
                   std::int64_t eval_every, bool bf16, bool remat, int threads, bool resume,
                   const py::object& on_step) {
  TrainOptions o;
  if (resume) {
    const std::string cfg = (fs::path(out) / "config.json").string();
    PALM_CHECK(fs::exists(cfg), out, ": not a training run (no config.json); resume=True continues a run");
    o = train_options_from_json(read_file(cfg), cfg);
    o.out = out;
    if (steps > 0) o.steps = steps;
  } else {
    PALM_CHECK(!preset.empty(), "train: give preset= (", [] {
      std::string r;
      for (const auto& n : preset_names()) r += (r.empty() ? "" : ", ") + n;
      return r;
    }(), ")");
    PALM_CHECK(!data.empty() && !out.empty(), "train: data= (a palm data build directory) and out= are required");
    o.model = palm::preset(preset);
    o.preset = preset;
    o.data = data;
    o.out = out;
    if (steps > 0) o.steps = steps;
    if (batch_size > 0) o.batch_size = batch_size;
    if (seq_len > 0) o.seq_len = seq_len;
    o.seed = seed;
    if (checkpoint_every > 0) o.checkpoint_every = checkpoint_every;
    if (eval_every > 0) o.eval_every = eval_every;
    o.bf16 = bf16;
    o.remat = remat;
  }
  o.threads = threads;
  std::shared_ptr<py::error_already_set> pending;  // raised once the run has stopped cleanly
  o.on_step = [&](const std::string& metrics) {
    py::gil_scoped_acquire gil;
    if (pending) return;
    try {
      if (!on_step.is_none()) on_step(json_to_python(metrics));
      // Ctrl-C: Python's SIGINT handler runs here; this step is the one checkpointed
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    } catch (py::error_already_set& e) {
      pending = std::make_shared<py::error_already_set>(e);
      request_training_stop(SIGINT);
    }
  };
  std::int64_t done = 0;
  std::atomic<int> stop_signal{0};
  {
    const Computing computing;
    set_threads(threads);
    const StopSignals watcher([&](int sig) {
      stop_signal = sig;
      request_training_stop(sig);
    });
    done = run_training(o, resume);
  }
  request_training_stop(0);  // one that came after the last step must not stop the next run
  if (pending) throw *pending;
  if (stop_signal != 0) {
    pthread_kill(pthread_self(), stop_signal);  // unblocked again: Python's handler (or the default) acts now
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  return done;
}

py::object evaluate(const std::shared_ptr<PythonModel>& model, const std::string& task, const std::string& data,
                    std::int64_t limit, std::int64_t shots, bool cot, const std::string& labels,
                    const std::string& cot_prompts, std::int64_t num_samples, double temperature, double top_p,
                    std::uint64_t seed, int jobs, double timeout, const std::string& completions) {
  EvalOptions o;
  o.task.name = task;
  o.task.data = data;
  o.task.limit = limit;
  o.task.shots = shots;
  o.task.cot = cot;
  o.task.labels = labels;
  o.task.cot_prompts = cot_prompts;
  o.num_samples = num_samples;
  o.temperature = temperature;
  o.top_p = top_p;
  o.seed = seed;
  o.jobs = jobs;
  if (timeout != 0) {
    PALM_CHECK(std::isfinite(timeout) && timeout >= 0.1 && timeout <= 3600, "eval: timeout must be in [0.1, 3600] s, got ",
               timeout);
    o.sandbox.seconds = timeout;
  }
  o.completions = completions;
  o.palm_version = "palm (python)";
  std::unique_ptr<EvalModel> em;
  if (model) {
    em = std::make_unique<EvalModel>(EvalModel{model->loaded.backend.get(), model->loaded.weights.get(),
                                               model->loaded.tokenizer.get()});
    o.model_path = model->loaded.path;
    o.model_sha256 = sha256_file(model->loaded.path);
  }
  std::string text;
  {
    const Computing computing;
    std::unique_lock<std::mutex> lock;
    if (model) lock = std::unique_lock<std::mutex>(model->mu);
    text = run_eval(o, em.get()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return json_to_python(text);
}

}  // namespace

void bind_training(py::module_& m) {
  m.def("train", &train, py::arg("preset") = "", py::arg("data") = "", py::arg("out") = "", py::arg("steps") = 0,
        py::arg("batch_size") = 0, py::arg("seq_len") = 0, py::arg("seed") = 0, py::arg("checkpoint_every") = 0,
        py::arg("eval_every") = 0, py::arg("bf16") = false, py::arg("remat") = false, py::arg("threads") = 0,
        py::arg("resume") = false, py::arg("on_step") = py::none(),
        "Train with PaLM's recipe as palm train (0 = palm train's default for each number); resume=True continues "
        "out= to steps=. on_step(metrics: dict) runs after each step (step, loss, lr, grad_norm, tokens_per_s, ...). "
        "Ctrl-C finishes the step, checkpoints, then raises KeyboardInterrupt. Returns the last step done.");
  m.def("_eval", &evaluate, py::arg("model"), py::arg("task"), py::arg("data"), py::arg("limit") = 0,
        py::arg("shots") = -1, py::arg("cot") = true, py::arg("labels") = "", py::arg("cot_prompts") = "",
        py::arg("num_samples") = 1, py::arg("temperature") = -1.0, py::arg("top_p") = -1.0, py::arg("seed") = 0,
        py::arg("jobs") = 0, py::arg("timeout") = 0.0, py::arg("completions") = "");
}

}  // namespace palm::py_bindings
