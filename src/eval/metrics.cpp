#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "base/check.h"
#include "infer/stop.h"

namespace palm {

double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k) {
  PALM_CHECK(n > 0 && c >= 0 && c <= n && k > 0 && k <= n, "pass@k needs 0 <= c <= n and 0 < k <= n (n=", n,
             " c=", c, " k=", k, ")");
  if (n - c < k) return 1.0;
  double fail = 1.0;  // C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i)
  for (std::int64_t i = n - c + 1; i <= n; ++i) fail *= 1.0 - double(k) / double(i);
  return 1.0 - fail;
}

namespace {

std::string trim(const std::string& s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// The number starting at `i` (digits, commas inside, one decimal point), or nullopt.
std::optional<double> number_at(const std::string& t, std::size_t i) {
  std::string digits;
  bool dot = false;
  for (; i < t.size(); ++i) {
    const char ch = t[i];
    if (std::isdigit(static_cast<unsigned char>(ch))) {
      digits += ch;
    } else if (ch == ',' && !digits.empty() && i + 1 < t.size() && std::isdigit(static_cast<unsigned char>(t[i + 1]))) {
      continue;
    } else if (ch == '.' && !dot && !digits.empty() && i + 1 < t.size() &&
               std::isdigit(static_cast<unsigned char>(t[i + 1]))) {
      digits += ch;
      dot = true;
    } else {
      break;
    }
  }
  if (digits.empty()) return std::nullopt;
  return std::strtod(digits.c_str(), nullptr);
}

// The first number at or after `from`, with its sign.
std::optional<double> first_number_after(const std::string& t, std::size_t from) {
  for (std::size_t i = from; i < t.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(t[i]))) {
      auto v = number_at(t, i);
      const bool neg = i > 0 && t[i - 1] == '-';
      return v ? std::optional<double>(neg ? -*v : *v) : std::nullopt;
    }
    if (t[i] == '\n' && i > from + 1) break;  // the answer is on the marker's line
  }
  return std::nullopt;
}

}  // namespace

std::string extract_bbh_answer(const std::string& text) {
  const std::string low = lower(text);
  const std::string key = "the answer is";
  const std::size_t at = low.rfind(key);
  std::string ans;
  if (at != std::string::npos) {
    const std::size_t start = at + key.size();
    const std::size_t end = text.find('\n', start);
    ans = trim(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
  } else {
    std::size_t pos = 0;
    while (pos <= text.size()) {
      const std::size_t end = text.find('\n', pos);
      ans = trim(text.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
      if (!ans.empty() || end == std::string::npos) break;
      pos = end + 1;
    }
  }
  if (!ans.empty() && ans.back() == '.') ans.pop_back();
  return trim(ans);
}

std::optional<double> extract_number(const std::string& text) {
  const std::string low = lower(text);
  std::size_t marker = std::string::npos, skip = 0;
  for (const std::string key : {"the answer is", "####"}) {
    const std::size_t at = low.rfind(key);
    if (at != std::string::npos && (marker == std::string::npos || at > marker)) {
      marker = at;
      skip = key.size();
    }
  }
  if (marker != std::string::npos) {
    if (auto v = first_number_after(text, marker + skip)) return v;
  }
  std::optional<double> last;
  auto digit = [&](std::size_t i) { return i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); };
  for (std::size_t i = 0; i < text.size();) {
    if (!digit(i)) {
      ++i;
      continue;
    }
    const auto v = number_at(text, i);
    last = (i > 0 && text[i - 1] == '-') ? -*v : *v;
    while (digit(i) || ((text[i] == ',' || text[i] == '.') && digit(i + 1))) ++i;  // past this number
  }
  return last;
}

std::string gsm8k_cot_answer(const std::string& worked) {
  std::string out;
  for (std::size_t i = 0; i < worked.size();) {
    if (worked.compare(i, 2, "<<") == 0) {
      const std::size_t end = worked.find(">>", i + 2);
      if (end != std::string::npos) {
        i = end + 2;
        continue;
      }
    }
    out += worked[i++];
  }
  const std::size_t hash = out.rfind("####");
  if (hash != std::string::npos) {
    const std::string n = trim(out.substr(hash + 4));
    out = out.substr(0, hash);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    out += (out.empty() ? "" : "\n") + std::string("The answer is ") + n + ".";
  }
  return out;
}

std::string truncate_at(const std::string& text, const std::vector<std::string>& stops) {
  return text.substr(0, StopMatcher(stops).find(text));
}

}  // namespace palm
