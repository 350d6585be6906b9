// MemoryImage: the RAM of one guest, as a list of named RAM blocks.
//
// QEMU names each RAM block (RAMBlock idstr): with
// `-object memory-backend-file,id=mem0,...` the guest's main RAM is block
// "mem0"; a migration stream also carries firmware and device blocks
// ("pc.bios", "0000:00:02.0/vga.vram", ...). An image gives read access to the
// content of each block as one contiguous range of `length` bytes
// (length is a multiple of kPageSize).
//
// Images come from
//   * a guest RAM file written by memory-backend-file,share=on (OpenRamFile):
//     mmap'ed read-only, so a running guest's writes show through: it is live
//     memory unless the guest is paused;
//   * a QEMU 7.2 migration stream saved with `migrate "exec:cat > FILE"`
//     (LoadMigrationStream): every RAM block rebuilt from the PAGE and ZERO
//     records, later records winning (a ZERO record with fill byte b sets its
//     page to b), pages never sent left zero. The content lives in anonymous
//     memory, read-only once loaded; untouched and zero pages cost no memory;
//   * a running QEMU's address space (ReadProcessRam): the blocks copied with
//     process_vm_readv at the addresses qemu/ram_map.h finds, for guests
//     whose RAM is anonymous or memfd memory (libvirt's, by default). It is a
//     snapshot taken when it was read; zero pages cost no memory.
//
// Thread safety: a MemoryImage is immutable after it is opened (but see the
// live-memory note above); concurrent readers are fine. The image owns its
// mapping; pointers returned by BlockData() die with it.
#ifndef ESCDR_IMAGE_MEMORY_IMAGE_H_
#define ESCDR_IMAGE_MEMORY_IMAGE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/qemu/ram_map.h"

namespace escdr {

// One RAM block: its QEMU idstr and its length in bytes (used_length).
struct RamBlockInfo {
  std::string name;
  std::uint64_t length = 0;

  friend bool operator==(const RamBlockInfo&, const RamBlockInfo&) = default;
};

class MemoryImage {
 public:
  virtual ~MemoryImage() = default;
  MemoryImage(const MemoryImage&) = delete;
  MemoryImage& operator=(const MemoryImage&) = delete;

  // The blocks, in the order the source listed them (stream) or the single
  // block of a RAM file.
  virtual const std::vector<RamBlockInfo>& blocks() const = 0;

  // Returns the `blocks()[block].length` bytes of block `block`.
  // REQUIRES: block < blocks().size().
  virtual const std::uint8_t* BlockData(std::size_t block) const = 0;

  // Where the image came from, for messages (usually a path).
  virtual const std::string& source() const = 0;

  // Returns the index of the block named `name`, or -1.
  int FindBlock(const std::string& name) const;

  // Total bytes over all blocks.
  std::uint64_t TotalBytes() const;

 protected:
  MemoryImage() = default;
};

// Maps the guest RAM file at `path` read-only as one block named `block_name`.
// Errors: NotFound/IOError if it cannot be opened or mapped; InvalidArgument if
// it is empty or its size is not a multiple of kPageSize.
Result<std::unique_ptr<MemoryImage>> OpenRamFile(const std::string& path,
                                                 const std::string& block_name = "mem0");

// Reads the saved QEMU migration stream at `path` and rebuilds every RAM block
// (in the START block list's order). Errors, each naming the file: the stream
// parser's (ProtocolError for a malformed or truncated stream, NotSupported
// for XBZRLE/compress/postcopy/x-ignore-shared), NotFound/IOError for the
// file, IOError/ResourceExhausted if the blocks cannot be allocated.
Result<std::unique_ptr<MemoryImage>> LoadMigrationStream(const std::string& path);

// Copies the RAM blocks `blocks` of the running process `pid` (a QEMU; see
// QueryMainRam) with process_vm_readv into an image with one block per
// mapping, named as the mapping, in the order given; source() is
// "process <pid>". Pages that read as zero are not stored (they cost no
// memory); in private anonymous memory, pages QEMU never touched are not
// even read, so the read does not commit them in QEMU (memfd and file
// memory is read whole; docs/donor-ram.md). The copy is taken in 2 MiB
// steps while the process runs: pause the guest first (QMP stop) for a
// consistent snapshot. Needs root or CAP_SYS_PTRACE over `pid`. Errors:
// FailedPrecondition (EPERM), NotFound (no such process, or part of the
// range is not mapped: ESRCH/EFAULT, naming the first unmapped address),
// InvalidArgument (no blocks, or a length that is 0 or not a multiple of
// kPageSize), ResourceExhausted if the copy cannot be allocated; each names
// the pid and the block.
Result<std::unique_ptr<MemoryImage>> ReadProcessRam(pid_t pid,
                                                    const std::vector<RamMapping>& blocks);

// Opens `path` as a migration stream if it starts with the QEVM magic, else as
// a raw RAM file (block "mem0").
Result<std::unique_ptr<MemoryImage>> OpenImage(const std::string& path);

}  // namespace escdr

#endif  // ESCDR_IMAGE_MEMORY_IMAGE_H_
