#include "escdr/catalog/directory_catalog_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>

#include "escdr/catalog/catalog_format.h"

namespace escdr {
namespace {

constexpr std::string_view kSuffix = ".catalog";
// NAME_MAX is 255; the rest is room for the temporary file's name
// (".<name>.tmp.<pid>.<n>") during an atomic replace.
constexpr std::size_t kMaxFileName = 200;

bool IsPlain(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::string PercentEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (IsPlain(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      if (!IsPlain(static_cast<unsigned char>(s[i]))) return std::nullopt;
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int a = HexDigit(s[i + 1]), b = HexDigit(s[i + 2]);
    if (a < 0 || b < 0) return std::nullopt;
    const char c = static_cast<char>(a * 16 + b);
    // Only the canonical encoding decodes, so each kind has one file name.
    if (IsPlain(static_cast<unsigned char>(c))) return std::nullopt;
    out.push_back(c);
    i += 2;
  }
  return out;
}

std::string IsoTime(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

std::string DirectoryCatalogStore::FileNameOf(const VmKind& kind) {
  return PercentEncode(kind.os) + "+" + PercentEncode(kind.os_version) + "+" +
         PercentEncode(kind.hypervisor) + "+" + PercentEncode(kind.hypervisor_version) +
         std::string(kSuffix);
}

std::optional<VmKind> DirectoryCatalogStore::KindOfFileName(const std::string& file_name) {
  if (file_name.size() <= kSuffix.size() || !file_name.ends_with(kSuffix)) return std::nullopt;
  std::string_view rest(file_name.data(), file_name.size() - kSuffix.size());
  std::vector<std::string> fields;
  while (true) {
    const std::size_t plus = rest.find('+');
    std::optional<std::string> field = PercentDecode(rest.substr(0, plus));
    if (!field) return std::nullopt;
    fields.push_back(std::move(*field));
    if (plus == std::string_view::npos) break;
    rest.remove_prefix(plus + 1);
  }
  if (fields.size() != 4) return std::nullopt;
  VmKind kind{fields[0], fields[1], fields[2], fields[3]};
  if (!kind.Validate().ok()) return std::nullopt;
  return kind;
}

Result<std::unique_ptr<DirectoryCatalogStore>> DirectoryCatalogStore::Open(
    const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Err(Status::IOError(
        fmt::format("cannot create catalog directory {}: {}", dir, ec.message())));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return Err(Status::IOError(fmt::format("catalog store path {} is not a directory", dir)));
  }
  return std::unique_ptr<DirectoryCatalogStore>(new DirectoryCatalogStore(dir));
}

Result<std::string> DirectoryCatalogStore::PathOf(const VmKind& kind) const {
  ESCDR_RETURN_IF_ERROR(kind.Validate().WithContext("catalog key"));
  const std::string name = FileNameOf(kind);
  if (name.size() > kMaxFileName) {
    return Err(Status::InvalidArgument(fmt::format(
        "catalog key {} is too long for a file name ({} bytes encoded, limit {})",
        kind.ToString(), name.size(), kMaxFileName)));
  }
  return dir_ + "/" + name;
}

Status DirectoryCatalogStore::PutCatalog(const VmKind& kind, const std::string& bytes) {
  ESCDR_ASSIGN_OR_RETURN(const std::string path, PathOf(kind));
  return WriteFileAtomically(path, bytes);
}

Result<std::string> DirectoryCatalogStore::GetCatalog(const VmKind& kind) {
  ESCDR_ASSIGN_OR_RETURN(const std::string path, PathOf(kind));
  Result<std::string> bytes = ReadCatalogBytes(path);
  if (!bytes && bytes.error().IsNotFound()) {
    return Err(Status::NotFound(
        fmt::format("no catalog for {} in {}", kind.ToString(), dir_)));
  }
  return bytes;
}

Result<std::vector<StoredCatalogInfo>> DirectoryCatalogStore::ListCatalogs() {
  std::vector<StoredCatalogInfo> out;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec);
  if (ec) {
    return Err(Status::IOError(fmt::format("cannot list catalog directory {}: {}", dir_,
                                           ec.message())));
  }
  // The error_code forms throughout: directory iteration must not throw.
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::filesystem::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    std::optional<VmKind> kind = KindOfFileName(name);
    if (!kind) continue;  // temporary files and strangers
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) != 0) {
      if (errno == ENOENT) continue;  // removed while listing
      return Err(Status::FromErrno("cannot stat catalog file " + entry.path().string(), errno));
    }
    if (!S_ISREG(st.st_mode)) continue;
    out.push_back(StoredCatalogInfo{std::move(*kind), static_cast<std::uint64_t>(st.st_size),
                                    IsoTime(st.st_mtime)});
  }
  if (ec) {
    return Err(Status::IOError(fmt::format("cannot list catalog directory {}: {}", dir_,
                                           ec.message())));
  }
  std::sort(out.begin(), out.end(),
            [](const StoredCatalogInfo& a, const StoredCatalogInfo& b) { return a.kind < b.kind; });
  return out;
}

Status DirectoryCatalogStore::RemoveCatalog(const VmKind& kind) {
  ESCDR_ASSIGN_OR_RETURN(const std::string path, PathOf(kind));
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) {
      return Status::NotFound(fmt::format("no catalog for {} in {}", kind.ToString(), dir_));
    }
    return Status::FromErrno("cannot remove catalog file " + path, errno);
  }
  return Status::OK();
}

}  // namespace escdr
