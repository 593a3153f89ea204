// Where the tests find data. The public evaluation sets and bundled corpora live in one
// place: $PALM_DATA_DIR, else ../shared/data beside the clone (the layout of
// shared/data/README.md; sources, file names and checksums in docs/evaluation.md).
// A clone without them skips the tests that need them, saying why and where to put the
// data; CI (CI=true) must have them, so there a missing set fails the test instead.
// Self-made fixtures in tests/fixtures/ (always present) cover every format and the
// tests that only need some text.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace palm::testing_util {

inline std::string data_dir() {
  const char* env = std::getenv("PALM_DATA_DIR");
  return env && *env ? std::string(env) : std::string(PALM_SOURCE_DIR "/../shared/data");
}

inline std::string fixtures_dir() { return PALM_SOURCE_DIR "/tests/fixtures"; }

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// "" when data_dir()/rel exists, else why the test cannot run and how to fix it.
inline std::string missing_data(const std::string& rel) {
  const std::string path = data_dir() + "/" + rel;
  if (std::filesystem::exists(path)) return "";
  return "needs " + path +
         " (a public evaluation set): put the sets in that layout there, or point PALM_DATA_DIR at them; "
         "docs/evaluation.md lists each set's source, file names and sha256";
}

}  // namespace palm::testing_util

// Skips the calling test (fails it under CI=true) when data_dir()/rel is missing.
#define PALM_REQUIRE_DATA(rel)                                                              \
  do {                                                                                      \
    const std::string palm_missing_ = ::palm::testing_util::missing_data(rel);              \
    if (!palm_missing_.empty()) {                                                           \
      if (::palm::testing_util::in_ci()) FAIL() << "CI=true but the data is missing: " << palm_missing_; \
      GTEST_SKIP() << palm_missing_;                                                        \
    }                                                                                       \
  } while (0)
