// Data sources for `palm data build`: NAME=PATH_OR_GLOB[:key=value...] specifications and
// the documents they hold, read in a fixed order (sorted files, file order within).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace palm {

struct SourceSpec {
  std::string name;
  std::vector<std::string> paths;    // files, directories or globs
  std::string format = "text";       // text | lines | jsonl
  std::string field = "text";        // jsonl field
  std::string sep;                   // documents separated by a line equal to sep
  double weight = 1.0;               // sampling proportion (normalized over sources)
  std::string kind = "text";         // text | code
  std::vector<std::string> ext;      // keep only these file extensions (no dot)
  std::vector<std::string> exclude;  // drop files whose path contains one of these
  std::int64_t min_chars = 1, max_chars = 1'000'000'000;
  bool near_dedup = false;           // default: on for kind=code
  std::string origin;                // recorded in the manifest instead of paths (dumped inputs)
};

// Parses "NAME=PATH_OR_GLOB[:key=value...]"; throws Error naming the bad part.
SourceSpec parse_source(const std::string& spec);

struct SourceReadStats {
  std::int64_t files = 0, bytes = 0, invalid_utf8 = 0, filtered = 0, malformed = 0;
};

// Calls fn(document) for every document of the source, in order; invalid UTF-8
// documents and documents outside [min_chars, max_chars] are counted and skipped (with a
// warning naming the file).
void read_documents(const SourceSpec& s, SourceReadStats& stats,
                    const std::function<bool(std::string&& doc)>& fn);  // fn returns false to stop

std::int64_t utf8_chars(const std::string& s);

}  // namespace palm
