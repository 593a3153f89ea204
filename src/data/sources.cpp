#include "data/sources.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/check.h"
#include "base/file_util.h"
#include "base/utf8.h"

namespace palm {

namespace {

std::vector<std::string> split(const std::string& s, char c) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == c) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

const char* kKeys[] = {"format", "field", "sep", "weight", "kind", "ext", "exclude", "min_chars", "max_chars", "near_dedup"};

// "key=value" with a lower-case key: an option (unknown keys are then an error);
// anything else after a ':' belongs to the path.
bool is_key_value(const std::string& part) {
  const auto eq = part.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  for (std::size_t i = 0; i < eq; ++i) {
    if (!(std::islower(static_cast<unsigned char>(part[i])) || part[i] == '_')) return false;
  }
  return true;
}

bool is_known_key(const std::string& part) {
  const std::string k = part.substr(0, part.find('='));
  return std::find(std::begin(kKeys), std::end(kKeys), k) != std::end(kKeys);
}

double parse_double(const std::string& v, const std::string& what) {
  std::size_t used = 0;
  double d = 0;
  try {
    d = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  PALM_CHECK(used == v.size() && !v.empty(), what, ": '", v, "' is not a number");
  return d;
}

}  // namespace

SourceSpec parse_source(const std::string& spec) {
  const auto eq = spec.find('=');
  PALM_CHECK(eq != std::string::npos && eq > 0, "--source '", spec, "': expected NAME=PATH_OR_GLOB[:key=value...]");
  SourceSpec s;
  s.name = spec.substr(0, eq);
  for (char c : s.name) {
    PALM_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-', "--source '", spec,
               "': source names use letters, digits, _ and - only");
  }
  // The path is everything up to the first ":key=value" with a known key (paths may hold ':').
  const auto parts = split(spec.substr(eq + 1), ':');
  std::string path = parts[0];
  std::size_t i = 1;
  while (i < parts.size() && !is_key_value(parts[i])) path += ":" + parts[i++];
  PALM_CHECK(!path.empty(), "--source '", spec, "': empty path");
  s.paths = {path};
  bool near_set = false;
  const std::string where = "--source " + s.name;
  for (; i < parts.size(); ++i) {
    PALM_CHECK(is_known_key(parts[i]), where, ": unknown option '", parts[i], "' (keys: format, field, sep, weight, kind, ext, exclude, min_chars, max_chars, near_dedup)");
    const auto e = parts[i].find('=');
    const std::string k = parts[i].substr(0, e), v = parts[i].substr(e + 1);
    if (k == "format") {
      PALM_CHECK(v == "text" || v == "lines" || v == "jsonl", where, ": format must be text, lines or jsonl, got '", v, "'");
      s.format = v;
    } else if (k == "field") {
      s.field = v;
    } else if (k == "sep") {
      PALM_CHECK(!v.empty(), where, ": sep must not be empty");
      s.sep = v;
    } else if (k == "weight") {
      s.weight = parse_double(v, where + " weight");
      PALM_CHECK(s.weight > 0, where, ": weight must be positive");
    } else if (k == "kind") {
      PALM_CHECK(v == "text" || v == "code", where, ": kind must be text or code, got '", v, "'");
      s.kind = v;
    } else if (k == "ext") {
      s.ext = split(v, ',');
    } else if (k == "exclude") {
      s.exclude = split(v, ',');
    } else if (k == "min_chars") {
      s.min_chars = static_cast<std::int64_t>(parse_double(v, where + " min_chars"));
    } else if (k == "max_chars") {
      s.max_chars = static_cast<std::int64_t>(parse_double(v, where + " max_chars"));
    } else if (k == "near_dedup") {
      PALM_CHECK(v == "on" || v == "off", where, ": near_dedup must be on or off");
      s.near_dedup = v == "on";
      near_set = true;
    }
  }
  if (!near_set) s.near_dedup = s.kind == "code";  // PaLM removed near-duplicate code files
  PALM_CHECK(s.min_chars <= s.max_chars, where, ": min_chars > max_chars");
  return s;
}

std::int64_t utf8_chars(const std::string& s) {
  std::int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void read_documents(const SourceSpec& s, SourceReadStats& stats,
                    const std::function<bool(std::string&& doc)>& fn) {
  std::vector<std::string> files;
  for (const auto& f : expand_inputs(s.paths)) {
    const auto dot = f.rfind('.');
    const std::string ext = dot == std::string::npos || f.find('/', dot) != std::string::npos ? "" : f.substr(dot + 1);
    if (!s.ext.empty() && std::find(s.ext.begin(), s.ext.end(), ext) == s.ext.end()) continue;
    bool excluded = false;
    for (const auto& x : s.exclude) excluded = excluded || (!x.empty() && f.find(x) != std::string::npos);
    if (!excluded) files.push_back(f);
  }
  PALM_CHECK(!files.empty(), "source ", s.name, ": no files left after the ext/exclude filters");
  bool go = true;
  for (const auto& f : files) {
    if (!go) break;
    ++stats.files;
    std::int64_t invalid = 0, malformed = 0, line_no = 0;
    auto emit = [&](std::string&& doc) {
      if (!go) return;
      if (find_invalid_utf8(doc) != std::string::npos) {
        ++invalid;
        return;
      }
      const std::int64_t chars = utf8_chars(doc);
      if (chars < s.min_chars || chars > s.max_chars) {
        ++stats.filtered;
        return;
      }
      go = fn(std::move(doc));
    };
    std::ifstream in(f, std::ios::binary);
    PALM_CHECK(in.good(), "source ", s.name, ": ", f, ": cannot open");
    if (s.format == "text" && s.sep.empty()) {
      std::ostringstream ss;
      ss << in.rdbuf();
      std::string doc = ss.str();
      stats.bytes += std::int64_t(doc.size());
      emit(std::move(doc));
    } else {
      std::string line, doc;
      bool have = false;
      while (go && std::getline(in, line)) {
        ++line_no;
        stats.bytes += std::int64_t(line.size()) + 1;
        if (!s.sep.empty()) {  // documents separated by a line equal to sep
          std::string bare = line;
          if (!bare.empty() && bare.back() == '\r') bare.pop_back();
          if (bare == s.sep) {
            if (have) emit(std::move(doc));
            doc.clear();
            have = false;
          } else {
            doc += line;
            doc += '\n';
            have = true;
          }
        } else if (s.format == "lines") {
          if (!line.empty()) emit(std::move(line));
        } else {  // jsonl
          if (line.empty()) continue;
          try {
            const auto j = nlohmann::json::parse(line);
            if (j.is_object() && j.contains(s.field) && j[s.field].is_string()) {
              emit(j[s.field].get<std::string>());
            } else {
              ++malformed;
              if (malformed <= 3) std::fprintf(stderr, "warning: %s:%lld: no string field '%s'\n", f.c_str(), (long long)line_no, s.field.c_str());
            }
          } catch (const nlohmann::json::exception&) {
            ++malformed;
            if (malformed <= 3) std::fprintf(stderr, "warning: %s:%lld: not valid JSON\n", f.c_str(), (long long)line_no);
          }
        }
      }
      if (have) emit(std::move(doc));
    }
    if (invalid) std::fprintf(stderr, "warning: source %s: %s: skipped %lld documents that are not valid UTF-8\n", s.name.c_str(), f.c_str(), (long long)invalid);
    stats.invalid_utf8 += invalid;
    stats.malformed += malformed;
  }
}

}  // namespace palm
