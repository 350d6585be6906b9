// ReadProcessRam: a running QEMU's guest RAM, copied with process_vm_readv.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

// Bytes per process_vm_readv call: large enough that the calls cost nothing
// next to the copy, small enough that the scratch buffer stays in cache.
constexpr std::size_t kChunkBytes = std::size_t{2} << 20;

// An anonymous mapping, unmapped on destruction.
class AnonMapping {
 public:
  AnonMapping() = default;
  AnonMapping(void* addr, std::size_t length) : addr_(addr), length_(length) {}
  ~AnonMapping() {
    if (addr_ != nullptr) ::munmap(addr_, length_);
  }
  AnonMapping(AnonMapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  AnonMapping& operator=(AnonMapping&&) = delete;
  AnonMapping(const AnonMapping&) = delete;
  AnonMapping& operator=(const AnonMapping&) = delete;

  // MAP_NORESERVE: pages never written stay the shared zero page.
  static Result<AnonMapping> Create(std::size_t length) {
    void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (addr == MAP_FAILED) return Err(Status::FromErrno("mmap", errno));
    return AnonMapping(addr, length);
  }

  std::uint8_t* data() const { return static_cast<std::uint8_t*>(addr_); }
  std::size_t length() const { return length_; }

 private:
  void* addr_ = nullptr;
  std::size_t length_ = 0;
};

class ProcessRamImage : public MemoryImage {
 public:
  ProcessRamImage(std::string source, std::vector<RamBlockInfo> blocks,
                  std::vector<AnonMapping> maps)
      : source_(std::move(source)), blocks_(std::move(blocks)), maps_(std::move(maps)) {}

  const std::vector<RamBlockInfo>& blocks() const override { return blocks_; }
  const std::uint8_t* BlockData(std::size_t block) const override { return maps_[block].data(); }
  const std::string& source() const override { return source_; }

 private:
  std::string source_;
  std::vector<RamBlockInfo> blocks_;
  std::vector<AnonMapping> maps_;
};

// The Status for process_vm_readv's `err` while reading `what`.
Status ReadError(int err, const std::string& what, std::uint64_t address) {
  switch (err) {
    case EPERM:
      return Status::FailedPrecondition(fmt::format(
          "cannot read {}: not permitted (needs root or CAP_SYS_PTRACE over it)", what));
    case ESRCH:
      return Status::NotFound(fmt::format("cannot read {}: no such process", what));
    case EFAULT:
      return Status::NotFound(
          fmt::format("cannot read {}: address {:#x} is not mapped in the process", what, address));
    case ENOMEM:
      return Status::ResourceExhausted(fmt::format("cannot read {}: out of memory", what));
    default:
      return Status::FromErrno(fmt::format("cannot read {}", what), err);
  }
}

// True if [address, address + length) of `pid` lies wholly in private
// anonymous mappings (QEMU's default guest RAM). False when it does not or
// /proc/<pid>/maps cannot be read (the read itself then reports why).
bool IsPrivateAnonymous(pid_t pid, std::uint64_t address, std::uint64_t length) {
  std::ifstream maps(fmt::format("/proc/{}/maps", pid));
  std::string line;
  std::uint64_t covered_to = address;  // [address, covered_to) is known anonymous
  const std::uint64_t end = address + length;
  while (covered_to < end && std::getline(maps, line)) {
    // "7f77a0000000-7f77b0002000 rw-p 00000000 00:00 0 [path]"
    std::istringstream in(line);
    std::string range, perms, offset, dev, path;
    std::uint64_t inode = 1;
    in >> range >> perms >> offset >> dev >> inode;
    std::getline(in, path);
    const std::size_t dash = range.find('-');
    if (dash == std::string::npos || perms.size() < 4) continue;
    std::uint64_t lo = 0;
    std::uint64_t hi = 0;
    const char* r = range.data();
    if (std::from_chars(r, r + dash, lo, 16).ec != std::errc() ||
        std::from_chars(r + dash + 1, r + range.size(), hi, 16).ec != std::errc()) {
      return false;
    }
    if (lo > covered_to || hi <= covered_to) continue;
    if (perms[3] != 'p' || inode != 0 || path.find_first_not_of(' ') != std::string::npos) {
      return false;
    }
    covered_to = hi;
  }
  return covered_to >= end;
}

// Reads [offset, offset + length) of block `m` into `dest`, through
// `scratch`, storing only the pages that are not zero. REQUIRES: length <=
// kChunkBytes.
Status ReadRun(pid_t pid, const RamMapping& m, const std::string& what, std::uint64_t offset,
               std::uint64_t length, std::uint8_t* scratch, std::uint8_t* dest) {
  const std::uint64_t end = offset + length;
  while (offset < end) {
    const auto want = static_cast<std::size_t>(end - offset);
    const std::uint64_t address = m.host_address + offset;
    iovec local{scratch, want};
    iovec remote{reinterpret_cast<void*>(static_cast<std::uintptr_t>(address)), want};
    ssize_t got = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return ReadError(errno, what, address);
    }
    // A short read stops at the first unmapped remote page; the next call
    // starts there and reports it. Less than a page cannot make progress.
    const std::size_t pages = static_cast<std::size_t>(got) / kPageSize;
    if (pages == 0) return ReadError(EFAULT, what, address + static_cast<std::uint64_t>(got));
    for (std::size_t p = 0; p < pages; ++p) {
      const std::uint8_t* page = scratch + p * kPageSize;
      if (!IsZeroPage(page)) std::memcpy(dest + offset + p * kPageSize, page, kPageSize);
    }
    offset += pages * kPageSize;
  }
  return Status::OK();
}

// Copies one block into `dest`, storing only the pages that are not zero.
//
// Reading a page the guest never touched is not free: the kernel faults it
// in for the reader, so a read of all of a mostly idle guest's anonymous RAM
// would commit all of it in QEMU (measured: +256 MiB of QEMU's RssAnon for a
// 256 MiB guest). Where the block is private anonymous memory, pages that
// /proc/<pid>/pagemap shows neither present nor swapped are zero by
// definition and are skipped. memfd and file-backed memory is read whole: a
// page missing from QEMU's page tables may still hold data there.
Status CopyBlock(pid_t pid, const RamMapping& m, std::uint8_t* scratch, std::uint8_t* dest) {
  const std::string what = fmt::format("RAM block '{}' of process {} ({:#x} bytes at {:#x})",
                                       m.block, pid, m.length, m.host_address);
  UniqueFd pagemap;
  if (m.host_address % kPageSize == 0 && IsPrivateAnonymous(pid, m.host_address, m.length)) {
    pagemap = UniqueFd(::open(fmt::format("/proc/{}/pagemap", pid).c_str(), O_RDONLY | O_CLOEXEC));
  }
  constexpr std::size_t kChunkPages = kChunkBytes / kPageSize;
  constexpr std::uint64_t kPresent = std::uint64_t{1} << 63;
  constexpr std::uint64_t kSwapped = std::uint64_t{1} << 62;
  std::vector<std::uint64_t> entries(kChunkPages);
  for (std::uint64_t offset = 0; offset < m.length; offset += kChunkBytes) {
    const std::uint64_t length = std::min<std::uint64_t>(kChunkBytes, m.length - offset);
    const std::size_t pages = static_cast<std::size_t>(length / kPageSize);
    bool filtered = false;
    if (pagemap.valid()) {
      const std::size_t bytes = pages * sizeof(std::uint64_t);
      const auto at = static_cast<off_t>((m.host_address + offset) / kPageSize * 8);
      filtered = ::pread(pagemap.get(), entries.data(), bytes, at) == static_cast<ssize_t>(bytes);
    }
    if (!filtered) {
      ESCDR_RETURN_IF_ERROR(ReadRun(pid, m, what, offset, length, scratch, dest));
      continue;
    }
    // Read each run of pages that exist; skip the rest.
    std::size_t p = 0;
    while (p < pages) {
      if ((entries[p] & (kPresent | kSwapped)) == 0) {
        ++p;
        continue;
      }
      std::size_t q = p;
      while (q < pages && (entries[q] & (kPresent | kSwapped)) != 0) ++q;
      ESCDR_RETURN_IF_ERROR(
          ReadRun(pid, m, what, offset + p * kPageSize, (q - p) * kPageSize, scratch, dest));
      p = q;
    }
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<MemoryImage>> ReadProcessRam(pid_t pid,
                                                    const std::vector<RamMapping>& blocks) {
  if (blocks.empty()) {
    return Err(Status::InvalidArgument(fmt::format("no RAM blocks to read from process {}", pid)));
  }
  for (const RamMapping& m : blocks) {
    if (m.length == 0 || m.length % kPageSize != 0) {
      return Err(Status::InvalidArgument(fmt::format(
          "RAM block '{}' of process {} has length {:#x}, not a positive multiple of {}", m.block,
          pid, m.length, kPageSize)));
    }
  }
  Result<AnonMapping> scratch = AnonMapping::Create(kChunkBytes);
  if (!scratch.has_value()) {
    return Err(Status::ResourceExhausted(
        fmt::format("cannot allocate a {}-byte buffer to read process {}: {}", kChunkBytes, pid,
                    scratch.error().message())));
  }
  std::vector<RamBlockInfo> infos;
  std::vector<AnonMapping> maps;
  for (const RamMapping& m : blocks) {
    Result<AnonMapping> map = AnonMapping::Create(m.length);
    if (!map.has_value()) {
      return Err(Status::ResourceExhausted(
          fmt::format("cannot allocate {:#x} bytes for RAM block '{}' of process {}: {}", m.length,
                      m.block, pid, map.error().message())));
    }
    ESCDR_RETURN_IF_ERROR(CopyBlock(pid, m, scratch->data(), map->data()));
    // Immutable from here on, as the contract says.
    ::mprotect(map->data(), map->length(), PROT_READ);
    infos.push_back(RamBlockInfo{m.block, m.length});
    maps.push_back(std::move(*map));
  }
  return std::make_unique<ProcessRamImage>(fmt::format("process {}", pid), std::move(infos),
                                           std::move(maps));
}

}  // namespace escdr
