// Constants of the QEMU migration stream (7.2 and 10.0), as escdr parses it.
//
// See docs/qemu-migration-stream.md for the grammar; the names follow QEMU's
// own (migration/savevm.h, migration/ram.c). Values only: no code.
#ifndef ESCDR_QEMU_STREAM_FORMAT_H_
#define ESCDR_QEMU_STREAM_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace escdr::stream_format {

inline constexpr std::uint32_t kFileMagic = 0x5145564d;  // "QEVM"
inline constexpr std::uint32_t kFileVersion = 3;

// Top-level record types (QEMU_VM_*).
inline constexpr std::uint8_t kSectionEof = 0x00;
inline constexpr std::uint8_t kSectionStart = 0x01;
inline constexpr std::uint8_t kSectionPart = 0x02;
inline constexpr std::uint8_t kSectionEnd = 0x03;
inline constexpr std::uint8_t kSectionFull = 0x04;
inline constexpr std::uint8_t kSubsection = 0x05;
inline constexpr std::uint8_t kSectionVmdesc = 0x06;
inline constexpr std::uint8_t kSectionConfiguration = 0x07;
inline constexpr std::uint8_t kSectionCommand = 0x08;
inline constexpr std::uint8_t kSectionFooter = 0x7e;

// COMMAND numbers (enum qemu_vm_cmd).
inline constexpr std::uint16_t kCmdOpenReturnPath = 1;
inline constexpr std::uint16_t kCmdPing = 2;
inline constexpr std::uint16_t kCmdPostcopyAdvise = 3;
inline constexpr std::uint16_t kCmdPostcopyListen = 4;
inline constexpr std::uint16_t kCmdPostcopyRun = 5;
inline constexpr std::uint16_t kCmdPostcopyRamDiscard = 6;
inline constexpr std::uint16_t kCmdPackaged = 7;
inline constexpr std::uint16_t kCmdEnableColo = 8;
inline constexpr std::uint16_t kCmdPostcopyResume = 9;
inline constexpr std::uint16_t kCmdRecvBitmap = 10;
inline constexpr std::uint16_t kCmdSwitchoverStart = 11;  // QEMU >= 10.0, len 0

// Configuration subsections.
inline constexpr std::string_view kSubsecCapabilities = "configuration/capabilities";
inline constexpr std::string_view kSubsecUuid = "configuration/uuid";
inline constexpr std::string_view kSubsecTargetPageBits = "configuration/target-page-bits";

// The "ram" iterative section.
inline constexpr std::string_view kRamIdstr = "ram";
inline constexpr std::uint32_t kRamVersion = 4;

// RAM record flags: the low 12 bits of each record's be64 word.
inline constexpr std::uint64_t kFlagMask = 0xfff;
inline constexpr std::uint32_t kFlagFull = 0x001;  // obsolete, never valid
inline constexpr std::uint32_t kFlagZero = 0x002;
inline constexpr std::uint32_t kFlagMemSize = 0x004;
inline constexpr std::uint32_t kFlagPage = 0x008;
inline constexpr std::uint32_t kFlagEos = 0x010;
inline constexpr std::uint32_t kFlagContinue = 0x020;
inline constexpr std::uint32_t kFlagXbzrle = 0x040;
inline constexpr std::uint32_t kFlagHook = 0x080;
inline constexpr std::uint32_t kFlagCompressPage = 0x100;  // removed in QEMU 9.1
inline constexpr std::uint32_t kFlagMultifdFlush = 0x200;  // QEMU >= 8.1, multifd only

// Validated capabilities that the configuration can list.
inline constexpr std::string_view kCapXIgnoreShared = "x-ignore-shared";
inline constexpr std::string_view kCapMappedRam = "mapped-ram";  // QEMU >= 9.0

// Destinations of machine types from this version on refuse a ZERO record
// whose fill byte is not 0 ("Found a zero page with value N").
inline constexpr int kZeroFillCheckMajor = 8;
inline constexpr int kZeroFillCheckMinor = 2;

// "7e <be32 id> 00 06 <be32 len>": last footer, EOF, VMDESCRIPTION header;
// the parser also matches the JSON's opening '{' (kTrailerProbe bytes).
inline constexpr std::size_t kTrailerHead = 11;
inline constexpr std::size_t kTrailerProbe = kTrailerHead + 1;

// Parser bounds (hostile-input limits, far above what QEMU writes).
inline constexpr std::uint32_t kMaxMachineName = 256;
inline constexpr std::uint32_t kMaxCapabilities = 64;
inline constexpr std::size_t kMaxBlocks = 4096;
inline constexpr std::size_t kMaxStagedItem = 512;  // >= 255 + 8, the longest staged item

// ParseStreamFile's read size.
inline constexpr std::size_t kFileChunkSize = std::size_t{1} << 20;

}  // namespace escdr::stream_format

#endif  // ESCDR_QEMU_STREAM_FORMAT_H_
