// The vocabulary's fixed special ids (docs/formats.md, "Tokenizer"), defined once for the
// tokenizer that assigns them and for every layer that acts on them (data packing,
// generation stopping on <eod>, evaluation's document starts).
#pragma once
#include <cstdint>

namespace palm {

inline constexpr std::int32_t kPadId = 0;
inline constexpr std::int32_t kEodId = 1;  // end of document: packs documents, ends generation
inline constexpr std::int32_t kUnkId = 2;

}  // namespace palm
