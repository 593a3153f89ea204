// The web pages' server side against real HTTP: `palm dashboard` and `palm serve --runs`
// never serve a byte outside the run directories (.. in every spelling, absolute paths,
// symlinks out of a run, a symlinked run), the runs API needs the key where one is set
// and the pages do not, metrics are paged by byte offset and start again when the file
// is rewritten, and every page's policy keeps it on this server. (The pages themselves
// are tested in Chromium: tests/js/browser.mjs.)
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "http_client.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using palm::testing_util::http_request;
using palm::testing_util::Reply;
using palm::testing_util::ServerProcess;

const char* kSecret = "TOP-SECRET-OUTSIDE-THE-RUNS";
std::string g_dir;
std::string p(const std::string& f) { return g_dir + "/" + f; }

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

Reply get(int port, const std::string& path, const std::string& key = "sk-web") {
  return http_request(port, "GET", path, "", key.empty() ? "" : "Authorization: Bearer " + key + "\r\n");
}

class Web : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_web_XXXXXX").string();
    g_dir = ::mkdtemp(t.data());
    // outside the served directory: a secret, and a whole run
    write(p("secret.txt"), kSecret);
    write(p("outside_run/metrics.jsonl"), std::string("{\"step\":1,\"loss\":1.0,\"note\":\"") + kSecret + "\"}\n");
    write(p("outside_run/MODEL_CARD.md"), kSecret);
    // the served directory: runs/a (a real run), runs/group/b (one level down)
    write(p("runs/a/metrics.jsonl"), "{\"step\":1,\"loss\":2.5,\"lr\":0.01}\n{\"step\":2,\"loss\":2.25,\"lr\":0.01}\n");
    write(p("runs/a/config.json"), "{\"steps\":2,\"model\":{\"d_model\":8}}");
    write(p("runs/a/MODEL_CARD.md"), "# Model card: a\n");
    write(p("runs/a/eval/gsm8k-test.json"), "{\"task\":\"gsm8k\",\"accuracy\":0.25,\"n\":4}");
    write(p("runs/group/b/metrics.jsonl"), "{\"step\":1,\"loss\":3.0}\n");
    write(p("runs/not_a_run/notes.txt"), kSecret);
    // symlinks that lead out: a document, an eval result, a metrics file, a whole run
    fs::create_symlink(p("secret.txt"), p("runs/a/DATASHEET.md"));
    fs::create_symlink(p("secret.txt"), p("runs/a/eval/leak.json"));
    fs::create_symlink(p("outside_run"), p("runs/linked_run"));
    write(p("runs/c/config.json"), "{}");
    fs::create_symlink(p("outside_run/metrics.jsonl"), p("runs/c/metrics.jsonl"));
    write(p("key"), "sk-web\n");
    dashboard = new ServerProcess(std::string(PALM_BINARY " dashboard --port 0 --api-key-file ") + p("key") + " " + p("runs"),
                                  p("dashboard.log"));
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(dashboard->stop(), 0);
    delete dashboard;
    fs::remove_all(g_dir);
  }
  static int port() { return dashboard->port; }
  static ServerProcess* dashboard;
};
ServerProcess* Web::dashboard = nullptr;

TEST_F(Web, ListsTheRunsBelowTheDirectoryAndOnlyThose) {
  const Reply r = get(port(), "/api/runs");
  ASSERT_EQ(r.status, 200) << r.body;
  std::set<std::string> ids;
  const json listed = json::parse(r.body);
  for (const auto& run : listed["runs"]) ids.insert(run["id"].get<std::string>());
  // runs/c's metrics.jsonl is a symlink out, runs/linked_run a symlinked directory: neither is a run here
  EXPECT_EQ(ids, (std::set<std::string>{"runs/a", "runs/group/b"})) << r.body;
}

TEST_F(Web, TheRunsApiNeedsTheKeyThePagesDoNot) {
  for (const char* path : {"/api/runs", "/api/runs/run?id=runs/a", "/api/runs/metrics?id=runs/a",
                           "/api/runs/file?id=runs/a&name=MODEL_CARD.md"}) {
    EXPECT_EQ(get(port(), path, "").status, 401) << path;
    EXPECT_EQ(get(port(), path, "wrong").status, 401) << path;
    EXPECT_EQ(get(port(), path).status, 200) << path;
  }
  for (const char* path : {"/runs", "/assets/runs.js", "/assets/uPlot.iife.min.js", "/assets/THIRD_PARTY_LICENSES.txt"})
    EXPECT_EQ(get(port(), path, "").status, 200) << path;
  // no model here: / leads to the runs page
  const Reply root = get(port(), "/", "");
  EXPECT_EQ(root.status, 302);
  EXPECT_NE(root.headers.find("Location: /runs"), std::string::npos);
  EXPECT_EQ(http_request(port(), "POST", "/api/runs", "{}", "Authorization: Bearer sk-web\r\n").status, 405);
  EXPECT_EQ(get(port(), "/v1/completions").status, 404) << "the dashboard has no model";
}

TEST_F(Web, NoSpellingOfDotDotReachesAFileOutsideTheRuns) {
  const std::vector<std::string> attempts = {
      // ids are looked up, never joined to a path
      "/api/runs/run?id=runs/a/../../outside_run", "/api/runs/run?id=..", "/api/runs/run?id=runs/..",
      "/api/runs/run?id=%2e%2e%2foutside_run", "/api/runs/run?id=" + p("outside_run"), "/api/runs/run?id=runs/linked_run",
      "/api/runs/metrics?id=runs/linked_run", "/api/runs/metrics?id=runs/c", "/api/runs/metrics?id=runs%2F..%2F..%2Foutside_run",
      "/api/runs/run?id=runs/a%00/../../secret.txt",
      // names come from a fixed list
      "/api/runs/file?id=runs/a&name=../../secret.txt", "/api/runs/file?id=runs/a&name=..%2F..%2Fsecret.txt",
      "/api/runs/file?id=runs/a&name=%2e%2e/%2e%2e/secret.txt", "/api/runs/file?id=runs/a&name=" + p("secret.txt"),
      "/api/runs/file?id=runs/a&name=MODEL_CARD.md/../../../secret.txt", "/api/runs/file?id=runs/a&name=..%5C..%5Csecret.txt",
      "/api/runs/file?id=runs/a&name=DATASHEET.md",  // a symlink out of the run
      "/api/runs/file?id=runs/not_a_run&name=notes.txt",
      // asset and route paths are matched exactly
      "/assets/../../secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt", "/assets//etc/passwd",
      "/assets/" + p("secret.txt"), "/api/runs/../../secret.txt", "/runs/../secret.txt", "/%2e%2e/secret.txt",
      "http://127.0.0.1/../../secret.txt"};
  for (const auto& path : attempts) {
    const Reply r = get(port(), path);
    EXPECT_TRUE(r.status == 400 || r.status == 403 || r.status == 404) << path << " -> " << r.status << " " << r.body;
    EXPECT_EQ(r.body.find(kSecret), std::string::npos) << path << " leaked the file: " << r.body;
    EXPECT_EQ(r.body.find("root:x:0"), std::string::npos) << path;
  }
  // the symlinked document is refused by name, with the reason
  const Reply sheet = get(port(), "/api/runs/file?id=runs/a&name=DATASHEET.md");
  EXPECT_EQ(sheet.status, 403);
  EXPECT_NE(sheet.body.find("leads outside the run directory"), std::string::npos) << sheet.body;
  // the run's view lists the real eval result and names the one that leads out
  const json run = json::parse(get(port(), "/api/runs/run?id=runs/a").body);
  ASSERT_EQ(run["evals"].size(), 1u) << run.dump();
  EXPECT_EQ(run["evals"][0]["task"], "gsm8k");
  EXPECT_EQ(run["evals"][0]["accuracy"], 0.25);
  EXPECT_NE(run["notes"].dump().find("leak.json"), std::string::npos) << run.dump();
  EXPECT_EQ(run.dump().find(kSecret), std::string::npos);
  EXPECT_EQ(run["config"]["model"]["d_model"], 8);
  EXPECT_EQ(run["documents"]["MODEL_CARD.md"], true);
}

TEST_F(Web, MetricsArePagedByOffsetAndStartAgainWhenTheFileIsRewritten) {
  const std::string id = "runs/group/b";
  json m = json::parse(get(port(), "/api/runs/metrics?id=" + id + "&from=0").body);
  ASSERT_EQ(m["records"].size(), 1u);
  const std::int64_t next = m["next"];
  const std::string gen = m["gen"];
  EXPECT_EQ(next, std::int64_t(fs::file_size(p("runs/group/b/metrics.jsonl"))));
  // an appended line and half a line: only the whole one comes, the half waits
  {
    std::ofstream f(p("runs/group/b/metrics.jsonl"), std::ios::app);
    f << "{\"step\":2,\"loss\":2.9}\n{\"step\":3,\"lo";
  }
  m = json::parse(get(port(), "/api/runs/metrics?id=" + id + "&from=" + std::to_string(next) + "&gen=" + gen).body);
  ASSERT_EQ(m["records"].size(), 1u) << m.dump();
  EXPECT_EQ(m["records"][0]["step"], 2);
  EXPECT_EQ(m["reset"], false);
  const std::int64_t next2 = m["next"];
  // a rollback rewrites the file (temp file + rename): a new gen, read again from 0
  write(p("runs/group/b/metrics.tmp"), "{\"step\":1,\"loss\":3.0}\n{\"event\":\"rollback\",\"spike_step\":2,\"step\":1}\n");
  fs::rename(p("runs/group/b/metrics.tmp"), p("runs/group/b/metrics.jsonl"));
  m = json::parse(get(port(), "/api/runs/metrics?id=" + id + "&from=" + std::to_string(next2) + "&gen=" + gen).body);
  EXPECT_EQ(m["reset"], true);
  EXPECT_EQ(m["from"], 0);
  ASSERT_EQ(m["records"].size(), 2u);
  EXPECT_EQ(m["records"][1]["event"], "rollback");
  // bad offsets are errors, not reads
  for (const char* bad : {"-1", "x", "1e3", "99999999999999999999"})
    EXPECT_EQ(get(port(), "/api/runs/metrics?id=" + id + "&from=" + bad).status, 400) << bad;
}

TEST_F(Web, PagesMayReachOnlyThisServer) {
  for (const char* path : {"/runs", "/assets/runs.js"}) {
    const Reply r = get(port(), path, "");
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.headers.find("Content-Security-Policy: default-src 'self'"), std::string::npos) << r.headers;
    EXPECT_NE(r.headers.find("connect-src 'self'"), std::string::npos);
    EXPECT_NE(r.headers.find("X-Content-Type-Options: nosniff"), std::string::npos);
  }
  // no page or script names another host: every URL they hold is this server's
  for (const char* path : {"/runs", "/assets/runs.js", "/assets/common.js", "/assets/playground.js"}) {
    const std::string body = get(port(), path, "").body;
    EXPECT_EQ(body.find("http://"), std::string::npos) << path;
    EXPECT_EQ(body.find("https://"), std::string::npos) << path;
  }
  const std::string licenses = get(port(), "/assets/THIRD_PARTY_LICENSES.txt", "").body;
  for (const char* pkg : {"==== uPlot ====", "==== marked ====", "==== DOMPurify ===="})
    EXPECT_NE(licenses.find(pkg), std::string::npos) << pkg;
}

TEST_F(Web, BadDirectoriesAreRefusedAtStart) {
  const std::string err = p("bad.err");
  EXPECT_NE(std::system((std::string(PALM_BINARY " dashboard --port 0 ") + p("missing") + " 2>" + err).c_str()), 0);
  const std::string log = palm::testing_util::slurp(err);
  EXPECT_NE(log.find("missing"), std::string::npos) << log;
}

}  // namespace
