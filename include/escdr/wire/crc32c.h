// CRC32C (Castagnoli): the per-frame checksum of the wire protocol.
//
// Reflected polynomial 0x82F63B78, initial value ~0, final xor ~0: the CRC of
// iSCSI, ext4 and leveldb (unmasked). Crc32c("123456789") == 0xE3069283.
// Uses the SSE4.2 crc32 instruction when the CPU has it (checked once at
// run time), a table otherwise; both give the same values.
//
// Thread safety: pure functions.
#ifndef ESCDR_WIRE_CRC32C_H_
#define ESCDR_WIRE_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace escdr::wire {

// Continues a CRC32C: `crc` is the value returned for the bytes before
// `data` (0 for none). Crc32cExtend(Crc32cExtend(0, a), b) == Crc32c(a ++ b).
std::uint32_t Crc32cExtend(std::uint32_t crc, const std::uint8_t* data, std::size_t size);

inline std::uint32_t Crc32c(std::span<const std::uint8_t> data) {
  return Crc32cExtend(0, data.data(), data.size());
}

// True if the hardware path is in use (for benchmarks and logs).
bool Crc32cIsHardwareAccelerated();

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_CRC32C_H_
