// Shares of the writing systems (Unicode scripts, by ICU) in a text, for datasheets.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace palm {

class ScriptCounter {
 public:
  // Counts the code points of valid UTF-8; invalid bytes count as "Invalid".
  void add(std::string_view utf8);
  std::int64_t total() const { return total_; }
  // script name ("Latin", "Cyrillic", "Han", "Common" for digits/punctuation/space, ...) -> code points
  const std::map<std::string, std::int64_t>& counts() const { return counts_; }

 private:
  std::map<std::string, std::int64_t> counts_;
  std::int64_t total_ = 0;
};

}  // namespace palm
