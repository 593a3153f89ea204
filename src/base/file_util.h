// File utilities: whole-file reads with clear errors, and atomic writes (temp file in the
// same directory, fsync, rename, fsync of the directory) so nothing on disk is ever left
// half-written.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace palm {

std::string read_file(const std::string& path);

// Calls write(fd) on a temporary file next to `path`, then fsyncs and renames it over
// `path`. On any failure the temporary is removed, the old `path` is untouched, and an
// Error names the file and the reason.
void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write);
void write_all(int fd, const void* data, std::size_t bytes, const std::string& what);
void write_text_atomic(const std::string& path, const std::string& text);
// Moves the finished directory `from` to `to`. When `to` exists, the two are exchanged in
// one step (renameat2 RENAME_EXCHANGE) and the old one is then removed: at every moment
// `to` is a complete directory, so a kill -9 in between loses nothing.
void replace_directory(const std::string& from, const std::string& to);

}  // namespace palm

namespace palm {

// Expands input specifications to a sorted list of regular files: a file; a directory
// (every file under it); or a pattern with *, ? and [..] in any component and ** for any
// number of directories. A spec that matches nothing is an Error naming it.
std::vector<std::string> expand_inputs(const std::vector<std::string>& specs);

}  // namespace palm
