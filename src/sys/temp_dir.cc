#include "escdr/sys/temp_dir.h"

#include <stdlib.h>

#include <cassert>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <vector>

#include <fmt/format.h>

namespace escdr {

Result<TempDir> TempDir::Create(std::string_view prefix, std::string parent) {
  assert(prefix.find('/') == std::string_view::npos);
  if (parent.empty()) {
    const char* env = ::getenv("TMPDIR");
    parent = (env != nullptr && env[0] != '\0') ? env : "/tmp";
  }
  std::string templ = fmt::format("{}/{}.XXXXXX", parent, prefix);
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    return Err(Status::FromErrno(fmt::format("cannot create temporary directory {}", templ), errno));
  }
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(buf.data(), ec);
  return TempDir(ec ? std::string(buf.data()) : abs.string());
}

TempDir::~TempDir() { (void)Remove(); }

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    (void)Remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

std::string TempDir::File(std::string_view name) const { return fmt::format("{}/{}", path_, name); }

Status TempDir::Remove() {
  if (path_.empty()) return Status::OK();
  Status s = RemoveRecursively(path_);
  path_.clear();
  return s;
}

std::string TempDir::Release() {
  std::string p = std::move(path_);
  path_.clear();
  return p;
}

Status RemoveRecursively(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) {
    return Status::IOError(fmt::format("cannot remove {}: {}", path, ec.message()));
  }
  return Status::OK();
}

}  // namespace escdr
