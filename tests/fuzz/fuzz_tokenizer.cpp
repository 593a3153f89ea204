// libFuzzer target for the tokenizer: any input is either valid UTF-8 that round-trips
// byte for byte, or invalid UTF-8 rejected with palm::Error; random id sequences decode
// without crashing. The tokenizer directory comes from PALM_FUZZ_TOKENIZER.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/check.h"
#include "base/utf8.h"
#include "tokenizer/tokenizer.h"

static const palm::Tokenizer& tokenizer() {
  static const auto tok = palm::Tokenizer::load(std::getenv("PALM_FUZZ_TOKENIZER"));
  return *tok;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const palm::Tokenizer& tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool valid = palm::find_invalid_utf8(text) == std::string::npos;
  try {
    const auto ids = tok.encode(text);
    if (!valid) std::abort();  // invalid UTF-8 must be refused
    if (tok.decode(ids) != text) std::abort();  // lossless
  } catch (const palm::Error&) {
    if (valid) std::abort();  // valid text must encode
  }
  // the same bytes read as token ids
  std::vector<std::int32_t> ids;
  for (std::size_t i = 0; i + 2 <= size; i += 2) ids.push_back((data[i] | data[i + 1] << 8) % tok.vocab_size());
  (void)tok.decode(ids);
  return 0;
}
