// Errors: one exception type carrying a one-line message, and the PALM_CHECK family
// that builds it with the offending values. Boundaries (files, options, library calls)
// check everything; the CLI turns an Error into "palm: error: ..." and a non-zero exit.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace palm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append_all(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::append_all(os, args...);
  return os.str();
}

[[noreturn]] void fail(const std::string& message);

}  // namespace palm

// PALM_CHECK(cond, parts...): throws palm::Error(str_cat(parts...)) when cond is false.
#define PALM_CHECK(cond, ...)                                   \
  do {                                                          \
    if (!(cond)) ::palm::fail(::palm::str_cat(__VA_ARGS__));    \
  } while (0)

// PALM_ASSERT: an internal invariant; failure is a palm bug, reported with its location.
#define PALM_ASSERT(cond)                                                              \
  do {                                                                                 \
    if (!(cond))                                                                       \
      ::palm::fail(::palm::str_cat("internal error: ", #cond, " at ", __FILE__, ":",   \
                                   __LINE__));                                         \
  } while (0)
