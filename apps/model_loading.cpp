// Opening a trained model for use: --model's forms (file, checkpoint, run), the tokenizer
// stored with it, and their cross-checks. Shared by the subcommands and the Python package.
#include <filesystem>

#include "base/check.h"
#include "common.h"
#include "kernels/backend.h"
#include "model/model_io.h"
#include "model/params.h"
#include "train/checkpoint.h"

namespace palm {

ModelConfig check_weights_config(const std::string& weights, const ModelConfig* given, const std::string& given_as) {
  const ModelConfig stored = read_model_config(weights);
  if (!given) return stored;
  ModelConfig g = *given;
  g.vocab_size = stored.vocab_size;
  const std::string diff = config_differences(stored, g);
  PALM_CHECK(diff.empty(), weights, " carries its own model config, which ", given_as, " contradicts (", diff,
             ": file vs given); drop ", given_as.substr(0, given_as.find(' ')), " to use the file's");
  return stored;
}

std::string resolve_model(const std::string& path, std::string* tokenizer_dir) {
  namespace fs = std::filesystem;
  PALM_CHECK(fs::exists(path), path, ": no such file or directory");
  std::string dir;
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "model.safetensors")) {
      dir = path;
    } else {
      dir = latest_checkpoint(path);
      PALM_CHECK(!dir.empty(), path, ": neither a checkpoint nor a run with a complete checkpoint");
    }
  }
  if (tokenizer_dir) {
    *tokenizer_dir = dir.empty() ? "" : (fs::path(dir) / "tokenizer").string();
    if (!dir.empty() && !fs::exists(*tokenizer_dir)) tokenizer_dir->clear();
  }
  PALM_CHECK(dir.empty() || fs::exists(fs::path(dir) / "model.safetensors") || !fs::exists(fs::path(dir) / "model.index.json"),
             dir, " holds the weights in shards (tensor parallel or --shard full); make one file with: palm export ", path,
             " --out model.safetensors");
  return dir.empty() ? path : (fs::path(dir) / "model.safetensors").string();
}

ModelAndTokenizer load_model_and_tokenizer(const std::string& model, const std::string& tokenizer_override,
                                           const std::string& backend) {
  ModelAndTokenizer m;
  std::string stored;
  m.path = resolve_model(model, &stored);
  m.tokenizer_dir = tokenizer_override.empty() ? stored : tokenizer_override;
  PALM_CHECK(!m.tokenizer_dir.empty(), model, ": no tokenizer stored with it; give --tokenizer DIR");
  m.tokenizer = Tokenizer::load(m.tokenizer_dir);
  m.backend = make_backend(backend);
  m.weights = load_model(*m.backend, m.path);
  const auto meta = read_model_metadata(m.path);
  const auto it = meta.find(kTokenizerShaKey);
  PALM_CHECK(it == meta.end() || it->second == m.tokenizer->sha256(), model, " was made for another tokenizer (sha256 ",
             it->second, "), not ", m.tokenizer_dir);
  PALM_CHECK(m.tokenizer->vocab_size() == m.weights->config.vocab_size, m.tokenizer_dir, " has ",
             m.tokenizer->vocab_size(), " tokens, the model ", m.weights->config.vocab_size);
  return m;
}

}  // namespace palm
