#include "escdr/page/page.h"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// Header-only XXH3: lets the compiler inline the 4 KiB hash loop into HashPage.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace escdr {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void PutHex64(std::uint64_t v, char* out) {
  for (int i = 15; i >= 0; --i) {
    out[i] = kHexDigits[v & 0xf];
    v >>= 4;
  }
}

}  // namespace

std::string PageHash::ToHex() const {
  std::string s(32, '0');
  PutHex64(hi, s.data());
  PutHex64(lo, s.data() + 16);
  return s;
}

std::optional<PageHash> PageHash::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  std::uint64_t words[2] = {0, 0};
  for (std::size_t i = 0; i < 32; ++i) {
    int v = HexValue(hex[i]);
    if (v < 0) return std::nullopt;
    words[i / 16] = (words[i / 16] << 4) | static_cast<std::uint64_t>(v);
  }
  return PageHash{words[0], words[1]};
}

PageHash HashPage(const std::uint8_t* page) {
  XXH128_hash_t h = XXH3_128bits(page, kPageSize);
  return PageHash{h.high64, h.low64};
}

bool IsZeroPage(const std::uint8_t* page) {
  // OR 256-byte strides and exit at the first non-zero one: most non-zero
  // pages are decided by their first stride, and the full scan of a zero page
  // runs at memory bandwidth. No per-byte branch.
#if defined(__SSE2__)
  const auto* p = reinterpret_cast<const __m128i*>(page);
  const __m128i zero = _mm_setzero_si128();
  for (std::size_t i = 0; i < kPageSize / 16; i += 16) {
    __m128i acc =
        _mm_or_si128(_mm_or_si128(_mm_loadu_si128(p + i), _mm_loadu_si128(p + i + 1)),
                     _mm_or_si128(_mm_loadu_si128(p + i + 2), _mm_loadu_si128(p + i + 3)));
    for (std::size_t j = 4; j < 16; j += 4) {
      acc = _mm_or_si128(
          acc, _mm_or_si128(
                   _mm_or_si128(_mm_loadu_si128(p + i + j), _mm_loadu_si128(p + i + j + 1)),
                   _mm_or_si128(_mm_loadu_si128(p + i + j + 2), _mm_loadu_si128(p + i + j + 3))));
    }
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(acc, zero)) != 0xffff) return false;
  }
  return true;
#else
  for (std::size_t i = 0; i < kPageSize; i += 256) {
    std::uint64_t acc = 0;
    for (std::size_t j = 0; j < 256; j += 8) {
      std::uint64_t w;
      std::memcpy(&w, page + i + j, sizeof w);
      acc |= w;
    }
    if (acc != 0) return false;
  }
  return true;
#endif
}

}  // namespace escdr
