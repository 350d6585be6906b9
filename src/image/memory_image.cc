#include "escdr/image/memory_image.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"

namespace escdr {

int MemoryImage::FindBlock(const std::string& name) const {
  const std::vector<RamBlockInfo>& b = blocks();
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (b[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::uint64_t MemoryImage::TotalBytes() const {
  std::uint64_t total = 0;
  for (const RamBlockInfo& b : blocks()) total += b.length;
  return total;
}

namespace {

// An mmap'ed range, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, std::size_t length) : addr_(addr), length_(length) {}
  ~Mapping() {
    if (addr_ != nullptr) ::munmap(addr_, length_);
  }
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      if (addr_ != nullptr) ::munmap(addr_, length_);
      addr_ = std::exchange(o.addr_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::uint8_t* data() const { return static_cast<std::uint8_t*>(addr_); }
  std::size_t length() const { return length_; }

 private:
  void* addr_ = nullptr;
  std::size_t length_ = 0;
};

class MappedImage : public MemoryImage {
 public:
  MappedImage(std::string source, std::vector<RamBlockInfo> blocks, std::vector<Mapping> maps)
      : source_(std::move(source)), blocks_(std::move(blocks)), maps_(std::move(maps)) {}

  const std::vector<RamBlockInfo>& blocks() const override { return blocks_; }
  const std::uint8_t* BlockData(std::size_t block) const override { return maps_[block].data(); }
  const std::string& source() const override { return source_; }

 private:
  std::string source_;
  std::vector<RamBlockInfo> blocks_;
  std::vector<Mapping> maps_;
};

// Opens `path` read-only; NotFound for a missing file, IOError otherwise.
Result<int> OpenReadOnly(const std::string& path, std::string_view what) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    Status s = Status::FromErrno(fmt::format("cannot open {} {}", what, path), err);
    if (err == ENOENT) return Err(Status::NotFound(s.message()));
    return Err(std::move(s));
  }
  return fd;
}

// Rebuilds RAM blocks from parser callbacks into anonymous memory.
class ImageBuilder : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t>) override { return Status::OK(); }

  Status OnBlockList(const std::vector<RamBlockInfo>& blocks) override {
    blocks_ = blocks;
    for (const RamBlockInfo& b : blocks) {
      // MAP_NORESERVE: pages never written stay the shared zero page.
      void* addr = ::mmap(nullptr, b.length, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (addr == MAP_FAILED) {
        return Status::FromErrno(
            fmt::format("cannot allocate {} bytes for RAM block '{}'", b.length, b.name), errno);
      }
      maps_.emplace_back(addr, b.length);
    }
    return Status::OK();
  }

  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    std::memcpy(maps_[block].data() + offset, data, kPageSize);
    return Status::OK();
  }

  Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) override {
    std::uint8_t* page = maps_[block].data() + offset;
    // Reading an untouched page costs no memory; writing zeros to it would.
    if (fill == 0 && IsZeroPage(page)) return Status::OK();
    std::memset(page, fill, kPageSize);
    return Status::OK();
  }

  std::vector<RamBlockInfo> blocks_;
  std::vector<Mapping> maps_;
};

}  // namespace

Result<std::unique_ptr<MemoryImage>> OpenRamFile(const std::string& path,
                                                 const std::string& block_name) {
  ESCDR_ASSIGN_OR_RETURN(int fd, OpenReadOnly(path, "RAM file"));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Err(Status::FromErrno(fmt::format("cannot stat RAM file {}", path), err));
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode) || size == 0 || size % kPageSize != 0) {
    ::close(fd);
    if (!S_ISREG(st.st_mode)) {
      return Err(Status::InvalidArgument(fmt::format("RAM file {} is not a regular file", path)));
    }
    return Err(Status::InvalidArgument(fmt::format(
        "RAM file {} has size {}, not a positive multiple of {}", path, size, kPageSize)));
  }
  // MAP_SHARED: a running guest's writes to its share=on backend show through.
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  int err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) {
    return Err(Status::FromErrno(fmt::format("cannot mmap RAM file {}", path), err));
  }
  std::vector<Mapping> maps;
  maps.emplace_back(addr, size);
  return std::make_unique<MappedImage>(path, std::vector<RamBlockInfo>{{block_name, size}},
                                       std::move(maps));
}

Result<std::unique_ptr<MemoryImage>> LoadMigrationStream(const std::string& path) {
  ImageBuilder builder;
  ESCDR_RETURN_IF_ERROR(ParseStreamFile(path, &builder));
  for (Mapping& m : builder.maps_) {
    // Immutable from here on, as the contract says.
    ::mprotect(m.data(), m.length(), PROT_READ);
  }
  return std::make_unique<MappedImage>(path, std::move(builder.blocks_), std::move(builder.maps_));
}

Result<std::unique_ptr<MemoryImage>> OpenImage(const std::string& path) {
  ESCDR_ASSIGN_OR_RETURN(int fd, OpenReadOnly(path, "memory image"));
  std::uint8_t magic[4] = {};
  ssize_t n;
  do {
    n = ::pread(fd, magic, sizeof magic, 0);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) return Err(Status::FromErrno(fmt::format("cannot read memory image {}", path), err));
  static constexpr std::uint8_t kQevm[4] = {'Q', 'E', 'V', 'M'};
  if (n == sizeof magic && std::memcmp(magic, kQevm, sizeof magic) == 0) {
    return LoadMigrationStream(path);
  }
  return OpenRamFile(path);
}

}  // namespace escdr
