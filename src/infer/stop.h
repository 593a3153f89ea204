// Stop strings, cut one way everywhere (palm generate, palm serve, palm eval): at the
// earliest occurrence of any of them in the generated text, as OpenAI's API does
// (stops "b" and "ab" on "xab" give "x"). The stop string itself is not output.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/special_tokens.h"

namespace palm {

class StopMatcher {
 public:
  // Throws Error when a string is empty.
  explicit StopMatcher(std::vector<std::string> stops);
  // Where the text is cut: the start of the earliest stop string in `text`, or npos.
  // `grown_from` is the text's size before its last append: earlier bytes were checked
  // already, so only occurrences that end after it are looked for.
  std::size_t find(std::string_view text, std::size_t grown_from = 0) const;
  // Bytes a stream must hold back: the end of the text could still begin a stop string.
  std::size_t hold_back() const { return longest_ ? longest_ - 1 : 0; }
  const std::vector<std::string>& strings() const { return stops_; }

 private:
  std::vector<std::string> stops_;
  std::size_t longest_ = 0;
};

}  // namespace palm
