// In-migration dedup (wire protocol version 4, docs/wire-protocol.md §3.13):
// a page whose bytes this migration already sent travels as a Dup entry, a
// back-reference to where those bytes stand in the stream, and the
// destination copies them from what it already rebuilt.
//
// Both ends keep a bounded history, `pages` * 4096 bytes (the source names
// it in Prepare):
//
// * DedupIndex (source): a copy of each page it sent in full (or as a Dup)
//   with the stream offset of its payload, indexed by a 64-bit key of its
//   content. Find() answers only with an offset the destination still holds
//   (at most the history behind the new payload) and only after comparing
//   the bytes, so a key collision can never make a Dup: the destination
//   receives exactly the bytes the source QEMU wrote. Memory: `pages` pages
//   plus 48 bytes per page of index.
// * StreamHistory (destination): the last `pages` * 4096 bytes of the rebuilt
//   stream, a ring addressed by stream offset. CopyPage() copies a page out
//   of it and checks it against the source's key of the page (the low 64 bits
//   of its XXH3-128), as a donor copy is checked, so a history that does not
//   hold what the source thinks it holds fails the migration instead of
//   reaching the QEMU.
//
// Thread safety: each object is used by one thread.
#ifndef ESCDR_WIRE_DEDUP_H_
#define ESCDR_WIRE_DEDUP_H_

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/page/page.h"
#include "escdr/page/page_ring.h"

namespace escdr::wire {

// The key of a page for dedup and the check of a Dup entry.
inline std::uint64_t DedupKey(const PageHash& h) { return h.lo; }

class DedupIndex {
 public:
  DedupIndex() = default;
  // `pages` > 0. Errors: ResourceExhausted if the memory cannot be mapped.
  static Result<DedupIndex> Create(std::uint32_t pages);

  std::uint32_t pages() const { return copies_.pages(); }

  // The stream offset of an earlier payload whose bytes equal `page`'s and
  // that the destination still holds when a payload starts at `position`;
  // nullopt if there is none.
  std::optional<std::uint64_t> Find(std::uint64_t key, const std::uint8_t* page,
                                    std::uint64_t position) const;
  // Remembers `page`, whose payload starts at stream offset `position`.
  // REQUIRES: `position` is past every earlier one by at least kPageSize.
  void Insert(std::uint64_t key, const std::uint8_t* page, std::uint64_t position);

 private:
  struct Slot {
    std::uint64_t key = 0;
    std::uint64_t position = 0;
  };
  PageRing copies_;
  std::vector<Slot> slots_;
  std::unordered_map<std::uint64_t, std::uint64_t> by_key_;  // key -> insertion number
  std::uint64_t inserted_ = 0;
};

class StreamHistory {
 public:
  StreamHistory() = default;
  // `pages` > 0. Errors: ResourceExhausted if the memory cannot be mapped.
  static Result<StreamHistory> Create(std::uint32_t pages);

  bool enabled() const { return ring_.pages() > 0; }
  // Stream bytes accounted for so far (appended or skipped).
  std::uint64_t position() const { return position_; }
  // The next stream bytes, in order.
  void Append(std::span<const std::uint8_t> bytes);
  // `n` stream bytes that are not kept (a page that is still to come from the
  // source): the history holds zeros there, so a Dup that names them fails
  // its check and can learn nothing of what the ring held before.
  void Skip(std::uint64_t n);

  // Copies the kPageSize bytes at stream offset `offset` to `out` and checks
  // them. Errors: ProtocolError if they are not (all) in the history
  // (ahead of position(), or older than the history holds); Corruption if
  // the copy does not match `check`.
  Status CopyPage(std::uint64_t offset, std::uint64_t check, std::uint8_t* out) const;

 private:
  PageRing ring_;
  std::uint64_t position_ = 0;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_DEDUP_H_
