#include "infer/stop.h"

#include <algorithm>

#include "base/check.h"

namespace palm {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) {
    PALM_CHECK(!s.empty(), "stop strings must not be empty");
    longest_ = std::max(longest_, s.size());
  }
}

std::size_t StopMatcher::find(std::string_view text, std::size_t grown_from) const {
  // An occurrence that ends after grown_from starts at or after grown_from - (longest - 1).
  const std::size_t from = std::min(text.size(), grown_from > hold_back() ? grown_from - hold_back() : 0);
  std::size_t cut = std::string_view::npos;
  for (const auto& s : stops_) cut = std::min(cut, text.find(s, from));
  return cut;
}

}  // namespace palm
