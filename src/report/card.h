// Model card (Mitchell et al. 2019) and datasheet (Gebru et al. 2021) rendered from the
// facts of a run (gathered by `palm card`: checkpoint, training record, data manifest,
// eval results, the author's info file). Nothing is invented: a fact that is missing is
// reported as missing, and what only the author can state is quoted from the info file
// or marked as not provided.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace palm {

struct CardDocuments {
  std::string model_card_md;
  std::string datasheet_md;
  nlohmann::ordered_json json;  // {"model_card": {section: ...}, "datasheet": {...}, "facts": ...}
};

// Keys an author may give in --info FILE.json (all strings).
const std::vector<std::string>& card_info_keys();

CardDocuments render_card(const nlohmann::ordered_json& facts);

}  // namespace palm
