#include "data/default_corpus.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "base/check.h"

namespace palm {

namespace {

namespace fs = std::filesystem;

// Runs cmd and writes its output to path, starting a new document ("%" line) where
// new_doc(line, lines_since_last) says so.
template <typename NewDoc>
void dump(const std::string& cmd, const std::string& path, const char* package, NewDoc new_doc) {
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  PALM_CHECK(p != nullptr, "cannot run ", cmd);
  std::ofstream out(path, std::ios::binary);
  char* buf = nullptr;
  std::size_t cap = 0;
  ssize_t n;
  long since = 0;
  std::int64_t bytes = 0;
  while ((n = ::getline(&buf, &cap, p)) > 0) {
    std::string line(buf, static_cast<std::size_t>(n));
    if (!line.empty() && line.back() == '\n') line.pop_back();
    if (new_doc(line, since)) {
      out << "%\n";
      since = 0;
    }
    out << line << '\n';
    ++since;
    bytes += n;
  }
  std::free(buf);
  const int rc = ::pclose(p);
  PALM_CHECK(rc == 0 && bytes > 0, "default corpus: '", cmd, "' failed; is the Debian package ", package,
             " installed? (scripts/install-deps.sh installs it)");
  PALM_CHECK(out.good(), path, ": write failed");
}

void require(const char* path, const char* package) {
  PALM_CHECK(fs::exists(path), "default corpus: ", path, " is missing; install the Debian package ", package,
             " (scripts/install-deps.sh does)");
}

SourceSpec spec(const std::string& name, const std::string& path, double weight, const std::string& kind = "text") {
  SourceSpec s;
  s.name = name;
  s.paths = {path};
  s.weight = weight;
  s.kind = kind;
  s.near_dedup = kind == "code";
  return s;
}

}  // namespace

std::vector<SourceSpec> default_corpus_sources(const std::string& raw_dir) {
  fs::create_directories(raw_dir);
  require("/usr/share/games/fortunes/fortunes", "fortunes");
  require("/usr/share/doc/jargon-text/jargon.txt.gz", "jargon-text");
  require("/usr/share/perl/5.36/pod/perl.pod", "perl-doc");
  require("/usr/lib/python3.11/json/__init__.py", "libpython3.11-stdlib");
  // The Bible: one document per chapter (a header line such as "Genesis 1" starts one).
  const std::string bible = raw_dir + "/bible.txt";
  dump("bible -l100000 Gen1:1-Rev22:21", bible, "bible-kjv", [](const std::string& line, long since) {
    return since > 0 && !line.empty() && line[0] != ' ';
  });
  // The Jargon File: documents of about 80 lines, cut at blank lines.
  const std::string jargon = raw_dir + "/jargon.txt";
  dump("gzip -dc /usr/share/doc/jargon-text/jargon.txt.gz", jargon, "jargon-text",
       [](const std::string& line, long since) { return since >= 80 && line.empty(); });

  std::vector<SourceSpec> s;
  // short texts in nine languages: fortune files separate entries with "%" lines;
  // the index files (.dat), UTF-8 duplicates (.u8) and the offensive sets (off/) are skipped
  SourceSpec fortunes = spec("fortunes", "/usr/share/games/fortunes", 0.30);
  fortunes.sep = "%";
  fortunes.exclude = {".dat", ".u8", "/off/", "/off"};
  s.push_back(fortunes);
  SourceSpec book = spec("bible", bible, 0.25);
  book.sep = "%";
  book.origin = "Debian package bible-kjv: bible -l100000 Gen1:1-Rev22:21, one document per chapter";
  s.push_back(book);
  SourceSpec dict = spec("jargon", jargon, 0.10);
  dict.sep = "%";
  dict.origin = "Debian package jargon-text: /usr/share/doc/jargon-text/jargon.txt.gz, documents of ~80 lines";
  s.push_back(dict);
  s.push_back(spec("perldoc", "/usr/share/perl/5.36/pod/*.pod", 0.20));
  SourceSpec code = spec("python", "/usr/lib/python3.11/**/*.py", 0.15, "code");
  code.exclude = {"/site-packages/", "/dist-packages/"};
  s.push_back(code);
  return s;
}

}  // namespace palm
