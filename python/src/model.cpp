// palm.Model: a trained model loaded in-process (score, generate, forward, weights).
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "base/check.h"
#include "base/threads.h"
#include "base/utf8.h"
#include "bindings.h"
#include "common.h"
#include "infer/generate.h"
#include "infer/score.h"
#include "infer/stop.h"
#include "kernels/device_buffer.h"
#include "model/accounting.h"
#include "model/model.h"
#include "model/kv_cache.h"
#include "model/stored_weights.h"
#include "python_model.h"

namespace palm::py_bindings {
namespace {

py::object json_to_python(const std::string& json_text) { return py::module_::import("json").attr("loads")(json_text); }

struct GenOptions {
  std::int64_t max_tokens = 64;
  SamplingOptions sampling;
  std::vector<std::string> stop;
};

GenOptions gen_options(std::int64_t max_tokens, double temperature, std::int64_t top_k, double top_p,
                       std::uint64_t seed, const std::vector<std::string>& stop) {
  GenOptions g;
  PALM_CHECK(max_tokens > 0 && max_tokens <= (std::int64_t(1) << 30), "max_tokens must be in [1, 2^30], got ", max_tokens);
  g.max_tokens = max_tokens;
  g.sampling = {temperature, top_k, top_p, seed};
  validate(g.sampling);
  g.stop = stop;
  return g;
}

// Text prompt (str) or token ids (list / 1-D int array) -> ids, as palm generate makes them.
std::vector<std::int32_t> prompt_ids(const PythonModel& m, const py::handle& prompt) {
  std::vector<std::int32_t> ids = py::isinstance<py::str>(prompt)
                                      ? m.loaded.tokenizer->encode(prompt.cast<std::string>())
                                      : ids_from(prompt, m.config().vocab_size, "prompt");
  PALM_CHECK(!ids.empty(), "the prompt is empty");
  PALM_CHECK(std::int64_t(ids.size()) < m.config().max_seq_len, "the prompt has ", ids.size(),
             " tokens; the context holds ", m.config().max_seq_len);
  return ids;
}

struct GenOutput {
  std::vector<std::string> text;
  std::vector<GenerationResult> results;
};

// Runs the batch; on_text(r, chunk) gets each request's text as it becomes final (stop
// strings cut, nothing held back that could still become one, whole characters only) and
// returns false to cancel everything. The caller holds m.mu.
GenOutput run_generation(PythonModel& m, const std::vector<std::vector<std::int32_t>>& prompts, const GenOptions& g,
                         const std::function<bool(std::size_t, const std::string&)>& on_text) {
  std::vector<GenerationRequest> reqs;
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    GenerationRequest r;
    r.prompt = prompts[p];
    r.max_tokens = g.max_tokens;
    r.sampling = g.sampling;
    r.stream = p * 1000003ull;  // as palm generate: prompt p, sample 0
    reqs.push_back(std::move(r));
  }
  const StopMatcher stops(g.stop);
  GenOutput out;
  out.text.resize(reqs.size());
  std::vector<std::size_t> sent(reqs.size(), 0);
  bool cancelled = false;
  auto flush = [&](std::size_t r, bool final) {
    const std::string& t = out.text[r];
    std::size_t upto = final ? t.size() : (t.size() > stops.hold_back() ? t.size() - stops.hold_back() : 0);
    upto = std::max(upto, sent[r]);
    upto = sent[r] + utf8_complete_prefix(std::string_view(t).substr(sent[r], upto - sent[r]));
    if (final) upto = t.size();
    if (upto > sent[r] && on_text && !on_text(r, t.substr(sent[r], upto - sent[r]))) cancelled = true;
    sent[r] = upto;
  };
  auto on_token = [&](std::size_t r, std::int32_t token) {
    const std::size_t grown_from = out.text[r].size();
    out.text[r] += m.loaded.tokenizer->decode({token});
    const std::size_t cut = stops.find(out.text[r], grown_from);
    const bool stop = cut != std::string::npos;
    if (stop) out.text[r].resize(cut);
    flush(r, stop);
    return stop || cancelled;
  };
  out.results = generate(*m.loaded.backend, *m.loaded.weights, reqs, 16, on_token, nullptr, m.stored.get(), m.kv);
  for (std::size_t r = 0; r < reqs.size(); ++r) flush(r, true);
  return out;
}

py::str utf8(const std::string& s) {
  return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(s.data(), py::ssize_t(s.size()), "replace"));
}

// generate(..., stream=True): generation on a worker thread, chunks handed over through a
// queue; iterating waits without the GIL. Dropping the iterator cancels the generation.
class TextStream {
 public:
  TextStream(std::shared_ptr<PythonModel> m, std::vector<std::int32_t> prompt, GenOptions g) : m_(std::move(m)) {
    worker_ = std::thread([this, prompt = std::move(prompt), g = std::move(g)] {
      adopt_process_threads();
      block_signals_in_compute_thread();  // it only computes: no handler, whenever installed, runs here
      try {
        std::lock_guard<std::mutex> model_lock(m_->mu);
        run_generation(*m_, {prompt}, g, [this](std::size_t, const std::string& chunk) {
          std::lock_guard<std::mutex> lock(mu_);
          chunks_.push_back(chunk);
          cv_.notify_one();
          return !cancel_.load();
        });
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = e.what();
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      cv_.notify_one();
    });
  }
  ~TextStream() {
    cancel_ = true;
    py::gil_scoped_release nogil;  // the worker may be waiting for nothing from Python, but never hold it while joining
    if (worker_.joinable()) worker_.join();
  }
  py::str next() {
    std::string chunk;
    {
      py::gil_scoped_release nogil;
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !chunks_.empty() || done_; });
      if (!chunks_.empty()) {
        chunk = std::move(chunks_.front());
        chunks_.pop_front();
      } else if (!error_.empty()) {
        lock.unlock();
        py::gil_scoped_acquire gil;
        throw Error(error_);
      } else {
        lock.unlock();
        py::gil_scoped_acquire gil;
        throw py::stop_iteration();
      }
    }
    return utf8(chunk);
  }

 private:
  std::shared_ptr<PythonModel> m_;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> chunks_;
  bool done_ = false;
  std::string error_;
  std::atomic<bool> cancel_{false};
};

// [B, T] (or [T]) integer ids from NumPy, checked; int32 C-contiguous input is used in place.
py::array_t<std::int32_t, py::array::c_style> batch_ids(const py::object& obj, std::int64_t vocab, std::int64_t max_t) {
  PALM_CHECK(py::isinstance<py::array>(obj), "forward: expected a NumPy integer array of token ids [B, T] or [T]");
  const auto a = py::reinterpret_borrow<py::array>(obj);
  PALM_CHECK(a.dtype().kind() == 'i' || a.dtype().kind() == 'u', "forward: token ids must be integers, got dtype ",
             std::string(py::str(a.dtype())));
  PALM_CHECK(a.ndim() == 1 || a.ndim() == 2, "forward: expected [B, T] or [T] token ids, got ", a.ndim(), " dimensions");
  auto ids = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(a);
  PALM_CHECK(ids, "forward: the ids do not convert to int32");
  const std::int64_t T = a.shape(a.ndim() - 1), B = a.ndim() == 2 ? a.shape(0) : 1;
  PALM_CHECK(B > 0 && T > 0, "forward: empty batch [", B, ", ", T, "]");
  PALM_CHECK(T <= max_t, "forward: ", T, " tokens per row; the context holds ", max_t);
  const std::int32_t* p = ids.data();
  for (std::int64_t i = 0; i < B * T; ++i)
    PALM_CHECK(p[i] >= 0 && p[i] < vocab, "forward: token id ", p[i], " at flat position ", i,
               " is outside the vocabulary [0, ", vocab, ")");
  return ids;
}

}  // namespace

void bind_model(py::module_& m) {
  py::class_<TextStream>(m, "TextStream", "Text chunks of one generation, as they are decoded")
      .def("__iter__", [](TextStream& s) -> TextStream& { return s; })
      .def("__next__", &TextStream::next);

  py::class_<PythonModel, std::shared_ptr<PythonModel>>(m, "Model", "A trained palm model, in this process")
      .def_static(
          "load",
          [](const std::string& path, const std::string& backend, int threads, const std::string& weights,
             const std::string& tokenizer, const std::string& kv_cache) {
            auto pm = std::make_shared<PythonModel>();
            const Computing computing;
            set_threads(threads);
            pm->loaded = load_model_and_tokenizer(path, tokenizer, backend);
            const WeightFormat format = parse_weight_format(weights);
            pm->kv = parse_kv_format(kv_cache, format);
            if (format != WeightFormat::kF32)
              pm->stored = std::make_unique<DecodeWeights>(*pm->loaded.backend, *pm->loaded.weights, format);
            pm->weights_format = weights;
            return pm;
          },
          py::arg("path"), py::arg("backend") = "", py::arg("threads") = 0, py::arg("weights") = "fp32",
          py::arg("tokenizer") = "", py::arg("kv_cache") = "auto",
          "Load a run directory (its newest checkpoint), a checkpoint directory or a .safetensors file. backend: "
          "'cpu' or 'cuda' ('' = the default); threads: 0 = all cores; weights: fp32, bf16 or int8 storage for "
          "generation; tokenizer: a directory (default: the one stored with the model); kv_cache: generation's KV "
          "cache elements, fp32, bf16 or auto (bf16 with bf16 or int8 weights)")
      .def_property_readonly("config", [](const PythonModel& pm) { return json_to_python(config_to_json(pm.config())); })
      .def_property_readonly("path", [](const PythonModel& pm) { return pm.loaded.path; })
      .def_property_readonly("backend", [](const PythonModel& pm) { return pm.loaded.backend->name(); })
      .def_property_readonly("tokenizer", [](const PythonModel& pm) { return pm.loaded.tokenizer.get(); },
                             py::return_value_policy::reference_internal)
      .def_property_readonly("num_parameters",
                             [](const PythonModel& pm) { return account(*pm.loaded.backend, pm.config(), 1, 1).parameters; })
      .def_property_readonly("flops_per_token",
                             [](const PythonModel& pm) {
                               return account(*pm.loaded.backend, pm.config(), 1, pm.config().max_seq_len).flops_per_token;
                             },
                             "Training FLOPs per token at the full context (6N + 12 L H K T)")
      .def(
          "score",
          [](PythonModel& pm, const py::object& ids) {
            const auto seq = ids_from(ids, pm.config().vocab_size, "score");
            std::vector<double> lp;
            {
              const Computing computing;
              std::lock_guard<std::mutex> lock(pm.mu);
              lp = token_logprobs(*pm.loaded.backend, *pm.loaded.weights, seq);
            }
            return py::array_t<double>(py::ssize_t(lp.size()), lp.data());
          },
          py::arg("ids"), "log p(ids[i+1] | ids[:i+1]) for each i (NumPy float64, len(ids) - 1), as palm score")
      .def(
          "forward",
          [](std::shared_ptr<PythonModel> model, const py::object& obj) -> py::array {
            PythonModel& pm = *model;
            const ModelConfig& c = pm.config();
            const auto ids = batch_ids(obj, c.vocab_size, c.max_seq_len);
            const std::int64_t T = ids.shape(ids.ndim() - 1), B = ids.ndim() == 2 ? ids.shape(0) : 1, V = c.vocab_size;
            Backend& be = *pm.loaded.backend;
            auto acts = std::make_unique<Activations>(be, c, ActivationPlan{B, T, false, false});
            {
              const Computing computing;
              std::lock_guard<std::mutex> lock(pm.mu);
              forward(be, *pm.loaded.weights, *acts, ids.data(), ids.data(), 0.0f);  // targets unused here
              be.synchronize();
            }
            std::vector<py::ssize_t> shape = {py::ssize_t(B), py::ssize_t(T), py::ssize_t(V)};
            if (ids.ndim() == 1) shape.erase(shape.begin());
            if (be.host_visible()) {
              // the logits where they are: the array owns the activations, and keeps the
              // model (whose backend the activations' memory belongs to) alive after it
              struct Held {
                std::shared_ptr<PythonModel> model;
                std::unique_ptr<Activations> acts;
              };
              float* logits = acts->logits;
              auto* held = new Held{model, std::move(acts)};
              py::capsule owner(held, [](void* p) { delete static_cast<Held*>(p); });
              return py::array_t<float>(shape, logits, owner);
            }
            py::array_t<float> out(shape);
            be.copy_to_host(out.mutable_data(), acts->logits, sizeof(float) * std::size_t(B * T * V));
            return out;
          },
          py::arg("ids"), "Logits [B, T, V] (float32) of integer ids [B, T] (or [T, V] of [T])")
      .def(
          "generate",
          [](std::shared_ptr<PythonModel> pm, const py::object& prompt, std::int64_t max_tokens, double temperature,
             std::int64_t top_k, double top_p, std::uint64_t seed, const std::vector<std::string>& stop,
             bool stream) -> py::object {
            const GenOptions g = gen_options(max_tokens, temperature, top_k, top_p, seed, stop);
            std::vector<std::int32_t> ids = prompt_ids(*pm, prompt);
            if (stream) return py::cast(new TextStream(pm, std::move(ids), g), py::return_value_policy::take_ownership);
            GenOutput out;
            {
              const Computing computing;
              std::lock_guard<std::mutex> lock(pm->mu);
              out = run_generation(*pm, {ids}, g, nullptr);
            }
            return utf8(out.text[0]);
          },
          py::arg("prompt"), py::arg("max_tokens") = 64, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
          py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          py::arg("stream") = false,
          "Text after the prompt (str, or token ids); stream=True returns an iterator of text chunks. Greedy at "
          "temperature 0; top_k/top_p/seed as palm generate")
      .def(
          "generate_batch",
          [](PythonModel& pm, const std::vector<py::object>& prompts, std::int64_t max_tokens, double temperature,
             std::int64_t top_k, double top_p, std::uint64_t seed, const std::vector<std::string>& stop) {
            const GenOptions g = gen_options(max_tokens, temperature, top_k, top_p, seed, stop);
            std::vector<std::vector<std::int32_t>> ids;
            for (const auto& p : prompts) ids.push_back(prompt_ids(pm, p));
            PALM_CHECK(!ids.empty(), "generate_batch: no prompts");
            GenOutput out;
            {
              const Computing computing;
              std::lock_guard<std::mutex> lock(pm.mu);
              out = run_generation(pm, ids, g, nullptr);
            }
            py::list results;
            for (std::size_t r = 0; r < ids.size(); ++r) {
              py::dict d;
              d["text"] = utf8(out.text[r]);
              d["prompt_tokens"] = ids[r];
              d["tokens"] = out.results[r].tokens;
              d["logprobs"] = out.results[r].logprobs;
              d["finish_reason"] = out.results[r].finish_reason;
              results.append(d);
            }
            return results;
          },
          py::arg("prompts"), py::arg("max_tokens") = 64, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
          py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          "Many prompts decoded together (as --prompts-file): a list of {text, prompt_tokens, tokens, logprobs, "
          "finish_reason}")
      .def(
          "state_dict",
          [](const PythonModel& pm) {
            const Weights& w = *pm.loaded.weights;
            const HostWindow host(w.arena.backend(), w.arena.data(), w.arena.size());
            py::dict d;
            for_each_param(w.config, [&](const ParamInfo& p) {
              py::array_t<float> a(std::vector<py::ssize_t>(p.shape.begin(), p.shape.end()));
              std::copy(host.data() + p.offset, host.data() + p.offset + p.numel, a.mutable_data());
              d[py::str(p.name)] = a;
            });
            return d;
          },
          "Every weight as a NumPy float32 array (a copy), under its safetensors name")
      .def(
          "load_state_dict",
          [](PythonModel& pm, const py::dict& d) {
            Weights& w = *pm.loaded.weights;
            std::size_t known = 0;
            for_each_param(w.config, [&](const ParamInfo& p) {
              PALM_CHECK(d.contains(p.name), "load_state_dict: missing '", p.name, "'");
              ++known;
            });
            PALM_CHECK(std::size_t(py::len(d)) == known, "load_state_dict: ", py::len(d), " arrays given, the model has ",
                       known, " (names as state_dict())");
            std::lock_guard<std::mutex> lock(pm.mu);
            HostWindow host(w.arena.backend(), w.arena.data(), w.arena.size());
            for_each_param(w.config, [&](const ParamInfo& p) {
              const py::object v = d[py::str(p.name)];
              PALM_CHECK(py::isinstance<py::array>(v), "load_state_dict: '", p.name, "' is not a NumPy array");
              const auto a = py::reinterpret_borrow<py::array>(v);
              PALM_CHECK(a.dtype().is(py::dtype::of<float>()), "load_state_dict: '", p.name, "' has dtype ",
                         std::string(py::str(a.dtype())), ", expected float32");
              std::vector<std::int64_t> shape(a.shape(), a.shape() + a.ndim());
              PALM_CHECK(shape == p.shape, "load_state_dict: '", p.name, "' has the wrong shape for this model");
              const auto c = py::array_t<float, py::array::c_style>::ensure(a);
              std::copy(c.data(), c.data() + p.numel, host.data() + p.offset);
            });
            host.commit();
            if (pm.stored)
              pm.stored = std::make_unique<DecodeWeights>(*pm.loaded.backend, w, parse_weight_format(pm.weights_format));
          },
          py::arg("state"), "Replace every weight (names, shapes and float32 as state_dict() gives them)")
      .def("__repr__", [](const PythonModel& pm) {
        return "palm.Model('" + pm.loaded.path + "', backend='" + pm.loaded.backend->name() + "')";
      });
}

}  // namespace palm::py_bindings
