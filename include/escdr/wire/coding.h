// Little-endian fixed-width encoding for wire payloads.
//
// Every integer escdr puts on the agent-to-agent wire is little-endian and
// fixed width (docs/wire-protocol.md §2). The Put* functions append to a byte
// vector or store at a pointer; ByteReader reads a payload front to back and
// turns every short read into a ProtocolError that names the payload and the
// field, so decoders never index past the end of hostile input. No struct is
// ever memcpy'd to or from the wire.
//
// Thread safety: the functions are pure; a ByteReader is used by one thread.
#ifndef ESCDR_WIRE_CODING_H_
#define ESCDR_WIRE_CODING_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"

namespace escdr::wire {

inline void StoreFixed16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
inline void StoreFixed32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline void StoreFixed64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline std::uint16_t LoadFixed16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t LoadFixed32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline std::uint64_t LoadFixed64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
// QEMU's own integers are big-endian; the Refs record word is stored as one.
inline void StoreBigEndian64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
}
inline std::uint64_t LoadBigEndian64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

inline void PutFixed8(std::vector<std::uint8_t>* out, std::uint8_t v) { out->push_back(v); }
inline void PutFixed16(std::vector<std::uint8_t>* out, std::uint16_t v) {
  std::uint8_t b[2];
  StoreFixed16(b, v);
  out->insert(out->end(), b, b + 2);
}
inline void PutFixed32(std::vector<std::uint8_t>* out, std::uint32_t v) {
  std::uint8_t b[4];
  StoreFixed32(b, v);
  out->insert(out->end(), b, b + 4);
}
inline void PutFixed64(std::vector<std::uint8_t>* out, std::uint64_t v) {
  std::uint8_t b[8];
  StoreFixed64(b, v);
  out->insert(out->end(), b, b + 8);
}
inline void PutBytes(std::vector<std::uint8_t>* out, std::span<const std::uint8_t> bytes) {
  out->insert(out->end(), bytes.begin(), bytes.end());
}
// A u16 length and the bytes. REQUIRES: s.size() <= 65535 (callers check
// their own, smaller, limits first).
void PutString16(std::vector<std::uint8_t>* out, std::string_view s);

// Reads a payload front to back. Every Get* fails with ProtocolError
// "<what>: payload too short for <field> ..." once the bytes run out; after
// the first failure every later call fails too.
class ByteReader {
 public:
  // `what` names the payload in messages ("Prepare payload"); the reader
  // keeps a view of `bytes`, which must outlive it.
  ByteReader(std::span<const std::uint8_t> bytes, std::string_view what)
      : bytes_(bytes), what_(what) {}

  Result<std::uint8_t> GetFixed8(std::string_view field);
  Result<std::uint16_t> GetFixed16(std::string_view field);
  Result<std::uint32_t> GetFixed32(std::string_view field);
  Result<std::uint64_t> GetFixed64(std::string_view field);
  // `n` bytes as a view into the payload.
  Result<std::span<const std::uint8_t>> GetBytes(std::size_t n, std::string_view field);
  // A u16-length string of at most `max_length` bytes (and at least
  // `min_length`); ProtocolError otherwise.
  Result<std::string> GetString16(std::string_view field, std::size_t min_length,
                                  std::size_t max_length);
  // Everything not read yet.
  std::span<const std::uint8_t> Rest();

  std::size_t remaining() const { return bytes_.size() - pos_; }
  // OK if the payload has been read exactly; ProtocolError naming the number
  // of trailing bytes otherwise (payload lengths are exact, wire-protocol §2).
  Status ExpectEnd() const;

 private:
  Result<const std::uint8_t*> Take(std::size_t n, std::string_view field);

  std::span<const std::uint8_t> bytes_;
  std::size_t pos_ = 0;
  std::string_view what_;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_CODING_H_
