#include "report/scripts.h"

#include <unicode/uscript.h>
#include <unicode/utf8.h>

#include <array>

namespace palm {

void ScriptCounter::add(std::string_view text) {
  // per-script counts by code, named once at the end of each call
  std::array<std::int64_t, USCRIPT_CODE_LIMIT + 1> by_code{};
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const std::int32_t n = std::int32_t(text.size());
  std::int32_t i = 0;
  while (i < n) {
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0) {
      ++by_code[USCRIPT_CODE_LIMIT];
      continue;
    }
    UErrorCode err = U_ZERO_ERROR;
    const UScriptCode code = uscript_getScript(c, &err);
    ++by_code[U_SUCCESS(err) && code >= 0 && code < USCRIPT_CODE_LIMIT ? code : USCRIPT_UNKNOWN];
  }
  for (int code = 0; code <= USCRIPT_CODE_LIMIT; ++code) {
    if (!by_code[code]) continue;
    const char* name = code == USCRIPT_CODE_LIMIT ? "Invalid" : uscript_getName(UScriptCode(code));
    counts_[name ? name : "Unknown"] += by_code[code];
    total_ += by_code[code];
  }
}

}  // namespace palm
