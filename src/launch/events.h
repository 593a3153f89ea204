// RUN/events.jsonl: what `palm launch` did to a run, one JSON object per line, appended
// and flushed to disk as it happens (start, layout, failure, restart, shrink, give_up,
// stopped, finish, then). The record that `palm launch status` and the model card read.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace palm {

std::string events_path(const std::string& run);
// Appends {"time": now, "event": event, ...fields} and fsyncs.
void append_event(const std::string& run, const std::string& event, nlohmann::json fields = nlohmann::json::object());
// Every line that parses (a missing file: none).
std::vector<nlohmann::json> read_events(const std::string& run);

}  // namespace palm
