// TempDir: a uniquely named temporary directory, removed with its content.
//
// Create() makes the directory with mkdtemp(3) (mode 0700) under a parent
// (default $TMPDIR, else /tmp; use /dev/shm for guest RAM files so they live in
// memory). The destructor removes the directory recursively unless Release()
// was called; an error there is ignored (a destructor cannot report it), so
// call Remove() where a failed removal matters. TempDir is move-only; a
// moved-from TempDir owns nothing.
//
// Thread safety: not synchronized; distinct TempDirs are independent.
#ifndef ESCDR_SYS_TEMP_DIR_H_
#define ESCDR_SYS_TEMP_DIR_H_

#include <string>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr {

class TempDir {
 public:
  // Creates "<parent>/<prefix>.XXXXXX". `parent` empty means $TMPDIR or /tmp.
  // REQUIRES: `prefix` contains no '/'.
  static Result<TempDir> Create(std::string_view prefix = "escdr", std::string parent = "");

  TempDir() = default;  // owns nothing
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // The absolute directory path; empty if this TempDir owns nothing.
  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(std::string_view name) const;

  // Removes the directory and its content now. OK if it owns nothing.
  Status Remove();
  // Keeps the directory on destruction; returns its path.
  std::string Release();

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Removes `path` and, if it is a directory, everything below it (symlinks are
// removed, never followed). OK if `path` does not exist.
Status RemoveRecursively(const std::string& path);

}  // namespace escdr

#endif  // ESCDR_SYS_TEMP_DIR_H_
