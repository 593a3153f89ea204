// UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
#pragma once
#include <cstddef>
#include <string_view>

namespace palm {

// Byte offset of the first invalid byte, or npos when `s` is valid UTF-8.
std::size_t find_invalid_utf8(std::string_view s);

// Length of the longest prefix of `s` that ends on a character boundary (an incomplete
// trailing character is left for the next chunk of a stream).
std::size_t utf8_complete_prefix(std::string_view s);

}  // namespace palm
