#include "serve/runs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <set>

#include "base/check.h"
#include "serve/api.h"

namespace palm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kMaxDepth = 4;      // runs are found this many directories below a root at most
constexpr std::size_t kMaxRuns = 2000;
const char* const kDocuments[] = {"MODEL_CARD.md", "DATASHEET.md"};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

RunsReply error(int status, const std::string& message) {
  return {status, "application/json", dump(ApiError(status, message).body()) + "\n"};
}

bool inside(const fs::path& dir, const fs::path& p) {
  const std::string d = dir.string(), s = p.string();
  return s.size() > d.size() && s.compare(0, d.size(), d) == 0 && s[d.size()] == '/';
}

// A file of a run, opened only if its real path lies inside the run's real directory and
// it is a regular file. The descriptor is opened on the resolved path with O_NOFOLLOW, so
// a symlink swapped in after the check is refused too.
class RunFile {
 public:
  RunFile(const fs::path& run_real, const std::string& name) {
    std::error_code ec;
    const fs::path real = fs::canonical(run_real / name, ec);
    if (ec) {
      problem_ = name + ": not found in the run";
      status_ = 404;
      return;
    }
    if (!inside(run_real, real)) {
      problem_ = name + " leads outside the run directory (a symlink?): refused";
      status_ = 403;
      return;
    }
    fd_ = ::open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st{};
    if (fd_ < 0 || ::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      problem_ = name + ": not a regular file of the run";
      status_ = 403;
      return;
    }
    size_ = std::int64_t(st.st_size);
    gen_ = std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino);
  }
  ~RunFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  RunFile(const RunFile&) = delete;
  RunFile& operator=(const RunFile&) = delete;

  bool ok() const { return status_ == 0; }
  const std::string& problem() const { return problem_; }
  RunsReply refusal() const { return error(status_, problem_); }
  std::int64_t size() const { return size_; }
  const std::string& gen() const { return gen_; }
  // Up to n bytes from offset.
  std::string read(std::int64_t offset, std::int64_t n) const {
    std::string out(std::size_t(std::max<std::int64_t>(0, n)), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
      const ssize_t r = ::pread(fd_, out.data() + got, out.size() - got, off_t(offset + std::int64_t(got)));
      if (r <= 0) break;
      got += std::size_t(r);
    }
    out.resize(got);
    return out;
  }

 private:
  int fd_ = -1;
  int status_ = 0;
  std::string problem_;
  std::int64_t size_ = 0;
  std::string gen_;
};

// A document of at most kMaxDocumentBytes, or why not (*why).
bool read_document(const fs::path& run_real, const std::string& name, std::string* text, std::string* why) {
  RunFile f(run_real, name);
  if (!f.ok()) {
    *why = f.problem();
    return false;
  }
  if (f.size() > RunIndex::kMaxDocumentBytes) {
    *why = name + " has " + std::to_string(f.size()) + " bytes, more than the page shows (" +
           std::to_string(RunIndex::kMaxDocumentBytes) + ")";
    return false;
  }
  *text = f.read(0, f.size());
  return true;
}

double modified_seconds(const fs::path& p) {
  struct stat st{};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec);
}

}  // namespace

RunIndex::RunIndex(const std::vector<std::string>& roots) {
  std::set<std::string> labels;
  for (const auto& given : roots) {
    std::error_code ec;
    const fs::path real = fs::canonical(given, ec);
    PALM_CHECK(!ec && fs::is_directory(real), "runs directory ", given, ": ", ec ? ec.message() : "not a directory");
    std::string label = real.filename().string();
    if (label.empty()) label = "root";
    for (int k = 2; labels.count(label); ++k) label = real.filename().string() + "#" + std::to_string(k);
    labels.insert(label);
    roots_.push_back({real, given, label});
  }
}

std::vector<RunIndex::Run> RunIndex::discover() const {
  std::vector<Run> runs;
  auto is_run = [](const fs::path& d) {
    std::error_code ec;
    return fs::is_regular_file(fs::symlink_status(d / "metrics.jsonl", ec));
  };
  for (const auto& root : roots_) {
    if (is_run(root.real)) {
      runs.push_back({root.label, root.real, root.given});
      continue;
    }
    std::error_code ec;
    // symlinked directories are not followed: a run is listed only where it really lies
    fs::recursive_directory_iterator it(root.real, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end && runs.size() < kMaxRuns; it.increment(ec)) {
      const fs::directory_entry& e = *it;
      std::error_code sec;
      if (!e.is_directory(sec) || e.is_symlink(sec)) continue;
      const std::string name = e.path().filename().string();
      if (name.empty() || name[0] == '.' || name == "checkpoints" || name == "eval" || name == "tokenizer") {
        it.disable_recursion_pending();
        continue;
      }
      if (it.depth() + 1 >= kMaxDepth) it.disable_recursion_pending();
      if (!is_run(e.path())) continue;
      it.disable_recursion_pending();  // a run's own subdirectories hold no runs
      const std::string rel = fs::relative(e.path(), root.real).string();
      runs.push_back({root.label + "/" + rel, e.path(), (fs::path(root.given) / rel).string()});
    }
  }
  return runs;
}

bool RunIndex::find(const std::string& id, Run* run, RunsReply* reply) const {
  if (id.empty()) {
    *reply = error(400, "the query parameter id (a run id from /api/runs) is required");
    return false;
  }
  for (auto& r : discover())
    if (r.id == id) {
      *run = r;
      return true;
    }
  *reply = error(404, "no run '" + id + "' under the served directories (ids come from /api/runs)");
  return false;
}

RunsReply RunIndex::list() const {
  json runs = json::array();
  std::vector<Run> found = discover();
  std::vector<std::pair<double, json>> rows;
  for (const auto& r : found) {
    std::error_code ec;
    const auto bytes = fs::file_size(r.real / "metrics.jsonl", ec);
    const double modified = modified_seconds(r.real / "metrics.jsonl");
    rows.push_back({modified, {{"id", r.id}, {"dir", r.dir}, {"modified", modified}, {"metrics_bytes", ec ? 0 : bytes}}});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [m, j] : rows) runs.push_back(std::move(j));
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return {200, "application/json", dump({{"runs", runs}, {"now", now}}) + "\n"};
}

RunsReply RunIndex::run(const std::string& id) const {
  Run r;
  RunsReply refusal;
  if (!find(id, &r, &refusal)) return refusal;
  json out = {{"id", r.id}, {"dir", r.dir}};
  json notes = json::array();
  std::string text, why;
  // config.json: the run's training config (model, recipe); shown as a table
  if (read_document(r.real, "config.json", &text, &why)) {
    const json c = json::parse(text, nullptr, false);
    out["config"] = c.is_discarded() ? json(nullptr) : c;
    if (c.is_discarded()) notes.push_back("config.json is not valid JSON");
  } else {
    out["config"] = nullptr;
  }
  json docs = json::object();
  for (const char* name : kDocuments) {
    std::error_code ec;
    docs[name] = fs::exists(r.real / name, ec);
  }
  out["documents"] = docs;
  // eval results, as palm eval --model RUN keeps them
  json evals = json::array();
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(r.real / "eval", ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".json") names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    if (!read_document(r.real, "eval/" + name, &text, &why)) {
      notes.push_back(why);
      continue;
    }
    const json e = json::parse(text, nullptr, false);
    if (e.is_discarded() || !e.is_object() || !e.contains("task")) {
      notes.push_back("eval/" + name + " is not a palm eval results file");
      continue;
    }
    json row = {{"file", name}, {"task", e["task"]}};
    for (const char* k : {"data", "shots", "n", "tokens", "chain_of_thought", "accuracy", "accuracy_norm", "pass@1",
                          "pass@10", "pass@100", "bits_per_byte", "perplexity", "model_sha256"})
      if (e.contains(k)) row[k] = e[k];
    evals.push_back(row);
  }
  out["evals"] = evals;
  // palm launch's record: restarts, shrinks, failures
  json events = json::array();
  if (read_document(r.real, "events.jsonl", &text, &why)) {
    std::size_t at = 0;
    for (std::size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) {
      const json e = json::parse(text.substr(at, nl - at), nullptr, false);
      if (!e.is_discarded()) events.push_back(e);
    }
  }
  out["events"] = events;
  out["notes"] = notes;
  return {200, "application/json", dump(out) + "\n"};
}

RunsReply RunIndex::metrics(const std::string& id, const std::string& from_text, const std::string& gen) const {
  Run r;
  RunsReply refusal;
  if (!find(id, &r, &refusal)) return refusal;
  std::int64_t from = 0;
  if (!from_text.empty()) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(from_text.c_str(), &end, 10);
    if (errno || *end || v < 0) return error(400, "from must be a byte offset (a non-negative integer), got '" + from_text + "'");
    from = v;
  }
  RunFile f(r.real, "metrics.jsonl");
  if (!f.ok()) return f.refusal();
  const bool reset = (from > 0 && gen != f.gen()) || from > f.size();
  if (reset) from = 0;
  json records = json::array();
  std::int64_t next = from;
  // whole lines only: a line being written stays for the next poll
  for (std::int64_t want = kMetricsPageBytes; next == from && from < f.size(); want *= 4) {
    const std::string chunk = f.read(from, std::min(want, f.size() - from));
    const std::size_t last = chunk.rfind('\n');
    if (last == std::string::npos) {
      if (from + std::int64_t(chunk.size()) >= f.size() || want > 64 * kMetricsPageBytes) break;  // unfinished, or absurd
      continue;
    }
    std::size_t at = 0;
    for (std::size_t nl; at <= last && (nl = chunk.find('\n', at)) != std::string::npos; at = nl + 1) {
      const json j = json::parse(chunk.substr(at, nl - at), nullptr, false);
      if (!j.is_discarded() && j.is_object()) records.push_back(j);  // a line cut by kill -9: skipped
    }
    next = from + std::int64_t(last) + 1;
  }
  return {200, "application/json",
          dump({{"gen", f.gen()}, {"from", from}, {"next", next}, {"size", f.size()}, {"reset", reset}, {"records", records}}) +
              "\n"};
}

RunsReply RunIndex::file(const std::string& id, const std::string& name) const {
  Run r;
  RunsReply refusal;
  if (!find(id, &r, &refusal)) return refusal;
  if (std::find(std::begin(kDocuments), std::end(kDocuments), name) == std::end(kDocuments))
    return error(400, "name must be MODEL_CARD.md or DATASHEET.md, got '" + name + "'");
  RunFile f(r.real, name);
  if (!f.ok()) return f.refusal();
  if (f.size() > kMaxDocumentBytes) return error(413, name + " is larger than " + std::to_string(kMaxDocumentBytes) + " bytes");
  return {200, "text/markdown; charset=utf-8", f.read(0, f.size())};
}

}  // namespace palm
