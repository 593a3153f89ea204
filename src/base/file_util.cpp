#include "base/file_util.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "base/check.h"

namespace palm {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PALM_CHECK(in.good(), path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  PALM_CHECK(!in.bad(), path, ": read failed");
  return ss.str();
}

void write_all(int fd, const void* data, std::size_t bytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    PALM_CHECK(n > 0, what, ": write failed: ", std::strerror(errno));
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  const int fd = ::mkstemp(tmpl.data());
  PALM_CHECK(fd >= 0, path, ": cannot create a temporary file in ", dir.string(), ": ",
             std::strerror(errno));
  try {
    write(fd);
    PALM_CHECK(::fsync(fd) == 0, path, ": fsync failed: ", std::strerror(errno));
    PALM_CHECK(::fchmod(fd, 0644) == 0, path, ": chmod failed: ", std::strerror(errno));
    PALM_CHECK(::close(fd) == 0, path, ": close failed: ", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw;
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    fail(str_cat(path, ": rename failed: ", std::strerror(err)));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {  // make the rename itself durable
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](int fd) { write_all(fd, text.data(), text.size(), path); });
}

}  // namespace palm


namespace palm {

namespace {

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// Glob -> regex over '/'-separated paths: ** spans directories, * and ? do not.
std::regex glob_regex(const std::string& glob) {
  std::string re;
  for (std::size_t i = 0; i < glob.size(); ++i) {
    const char c = glob[i];
    if (c == '*' && i + 1 < glob.size() && glob[i + 1] == '*') {
      const bool slash = i + 2 < glob.size() && glob[i + 2] == '/';
      re += slash ? "(.*/)?" : ".*";
      i += slash ? 2 : 1;
    } else if (c == '*') {
      re += "[^/]*";
    } else if (c == '?') {
      re += "[^/]";
    } else if (c == '[') {
      const std::size_t close = glob.find(']', i + 1);
      if (close == std::string::npos) {
        re += "\\[";
      } else {
        std::string set = glob.substr(i + 1, close - i - 1);
        if (!set.empty() && set[0] == '!') set[0] = '^';
        re += "[" + set + "]";
        i = close;
      }
    } else if (std::string_view("\\^$.|+(){}").find(c) != std::string_view::npos) {
      re += '\\';
      re += c;
    } else {
      re += c;
    }
  }
  return std::regex(re);
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& specs) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const std::string& spec : specs) {
    std::vector<std::string> found;
    std::error_code ec;
    if (!has_wildcard(spec)) {
      PALM_CHECK(fs::exists(spec, ec), spec, ": no such file or directory");
      if (fs::is_directory(spec, ec)) {
        for (auto it = fs::recursive_directory_iterator(spec, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
          if (it->is_regular_file(ec)) found.push_back(it->path().string());
        }
        PALM_CHECK(!ec, spec, ": cannot list: ", ec.message());
      } else {
        found.push_back(spec);
      }
    } else {
      // The walk starts at the longest wildcard-free directory prefix.
      const std::size_t first = spec.find_first_of("*?[");
      const std::size_t slash = spec.rfind('/', first);
      const std::string root = slash == std::string::npos ? "." : (slash == 0 ? "/" : spec.substr(0, slash));
      const std::regex re = glob_regex(slash == std::string::npos ? "./" + spec : spec);
      if (fs::is_directory(root, ec)) {
        for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
          if (it->is_regular_file(ec) && std::regex_match(it->path().string(), re)) {
            found.push_back(it->path().string());
          }
        }
      }
      PALM_CHECK(!found.empty(), spec, ": no files match");
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

void replace_directory(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return;
  PALM_CHECK(errno == EEXIST, to, ": rename from ", from, " failed: ", std::strerror(errno));
  PALM_CHECK(::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0, to,
             ": exchange with ", from, " failed: ", std::strerror(errno));
  std::error_code ec;
  std::filesystem::remove_all(from, ec);  // now the old directory
}

}  // namespace palm
