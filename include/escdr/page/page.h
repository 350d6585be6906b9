// Pages: the unit of guest memory that escdr hashes, compares and elides.
//
// A page is kPageSize (4096) bytes, the x86 TARGET_PAGE_SIZE of QEMU. Its
// identity is a 128-bit XXH3 hash of its content (PageHash). Zero pages are
// detected separately: QEMU already sends them as one-byte ZERO records, so
// they are never catalog content.
//
// All functions here are pure and thread-safe.
#ifndef ESCDR_PAGE_PAGE_H_
#define ESCDR_PAGE_PAGE_H_

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace escdr {

inline constexpr std::size_t kPageSize = 4096;
inline constexpr std::size_t kPageShift = 12;

// XXH3-128 of a page. Ordered (hi, lo) so that sorted arrays of hashes can be
// binary-searched. The all-zero value is a valid hash like any other.
struct PageHash {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;

  friend constexpr auto operator<=>(const PageHash&, const PageHash&) = default;

  // 32 lower-case hex digits, hi first.
  std::string ToHex() const;
  // Parses the form ToHex() writes; nullopt if `hex` is not 32 hex digits.
  static std::optional<PageHash> FromHex(std::string_view hex);
};

// Returns the XXH3-128 hash of the kPageSize bytes at `page`.
// REQUIRES: `page` points to kPageSize readable bytes.
PageHash HashPage(const std::uint8_t* page);

// Returns true iff all kPageSize bytes at `page` are zero.
// REQUIRES: `page` points to kPageSize readable bytes.
bool IsZeroPage(const std::uint8_t* page);

// Hasher for unordered containers keyed by PageHash (the hash is already
// uniformly distributed, so its low word is enough).
struct PageHashHasher {
  std::size_t operator()(const PageHash& h) const noexcept {
    return static_cast<std::size_t>(h.lo);
  }
};

}  // namespace escdr

#endif  // ESCDR_PAGE_PAGE_H_
