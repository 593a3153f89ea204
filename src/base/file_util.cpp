#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
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
