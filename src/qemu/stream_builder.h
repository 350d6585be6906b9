// StreamBuilder: writes small, valid QEMU migration streams for tests and
// benchmarks, the way QEMU's savevm.c and ram.c lay them out (7.2 by default;
// a 10.0 stream takes Config("pc-i440fx-10.0"), a SWITCHOVER_START Command()
// before End(), and a vmdesc starting with "configuration" in Tail()).
//
// It knows only what escdr parses: header, configuration (with optional
// subsections), COMMAND records, the ram START/PART/END sections with
// PAGE/ZERO records (CONTINUE set whenever the block is the last one named,
// across sections, as QEMU does), and a device-state tail of FULL-section-like
// bytes, EOF and a VMDESCRIPTION. Raw() appends anything, to build bad input.
//
// Header-only, test support: not part of the library. Not thread-safe.
#ifndef ESCDR_QEMU_STREAM_BUILDER_H_
#define ESCDR_QEMU_STREAM_BUILDER_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"
#include "qemu/stream_format.h"

namespace escdr::test {

class StreamBuilder {
 public:
  std::vector<std::uint8_t>& bytes() { return out_; }
  std::size_t size() const { return out_.size(); }

  StreamBuilder& U8(std::uint8_t v) {
    out_.push_back(v);
    return *this;
  }
  StreamBuilder& Be16(std::uint16_t v) {
    return U8(static_cast<std::uint8_t>(v >> 8)).U8(v & 0xff);
  }
  StreamBuilder& Be32(std::uint32_t v) {
    return Be16(static_cast<std::uint16_t>(v >> 16)).Be16(static_cast<std::uint16_t>(v));
  }
  StreamBuilder& Be64(std::uint64_t v) {
    return Be32(static_cast<std::uint32_t>(v >> 32)).Be32(static_cast<std::uint32_t>(v));
  }
  StreamBuilder& Raw(std::string_view s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  StreamBuilder& Raw(const std::uint8_t* p, std::size_t n) {
    out_.insert(out_.end(), p, p + n);
    return *this;
  }
  StreamBuilder& Counted(std::string_view s) {
    return U8(static_cast<std::uint8_t>(s.size())).Raw(s);
  }

  StreamBuilder& Header(std::uint32_t magic = stream_format::kFileMagic,
                        std::uint32_t version = stream_format::kFileVersion) {
    return Be32(magic).Be32(version);
  }

  // The configuration section; `capabilities` non-empty adds the
  // capabilities subsection, `uuid` the uuid subsection.
  StreamBuilder& Config(std::string_view machine = "pc-i440fx-7.2",
                        const std::vector<std::string>& capabilities = {}, bool uuid = false) {
    U8(stream_format::kSectionConfiguration).Be32(static_cast<std::uint32_t>(machine.size()));
    Raw(machine);
    if (!capabilities.empty()) {
      U8(stream_format::kSubsection).Counted(stream_format::kSubsecCapabilities).Be32(1);
      Be32(static_cast<std::uint32_t>(capabilities.size()));
      for (const std::string& c : capabilities) Counted(c);
    }
    if (uuid) {
      U8(stream_format::kSubsection).Counted(stream_format::kSubsecUuid).Be32(1);
      for (int i = 0; i < 16; ++i) U8(static_cast<std::uint8_t>(0x10 + i));
    }
    return *this;
  }

  StreamBuilder& Command(std::uint16_t cmd, std::string_view args = {}) {
    return U8(stream_format::kSectionCommand)
        .Be16(cmd)
        .Be16(static_cast<std::uint16_t>(args.size()))
        .Raw(args);
  }
  // What a source with the return-path capability sends after the configuration.
  StreamBuilder& ReturnPathAndPing() {
    return Command(stream_format::kCmdOpenReturnPath)
        .Command(stream_format::kCmdPing, std::string_view("\0\0\0\1", 4));
  }

  // A complete ram START section (header, MEM_SIZE, block list, EOS, footer).
  StreamBuilder& Start(std::uint32_t section_id, const std::vector<RamBlockInfo>& blocks) {
    blocks_ = blocks;
    U8(stream_format::kSectionStart).Be32(section_id).Counted(stream_format::kRamIdstr);
    Be32(0).Be32(stream_format::kRamVersion);
    std::uint64_t total = 0;
    for (const RamBlockInfo& b : blocks) total += b.length;
    Be64(total | stream_format::kFlagMemSize);
    for (const RamBlockInfo& b : blocks) Counted(b.name).Be64(b.length);
    return Eos().Footer(section_id);
  }

  StreamBuilder& Part(std::uint32_t section_id) {
    return U8(stream_format::kSectionPart).Be32(section_id);
  }
  StreamBuilder& End(std::uint32_t section_id) {
    return U8(stream_format::kSectionEnd).Be32(section_id);
  }
  StreamBuilder& Eos() { return Be64(stream_format::kFlagEos); }
  StreamBuilder& Footer(std::uint32_t section_id) {
    return U8(stream_format::kSectionFooter).Be32(section_id);
  }
  // EOS + footer: the end of any ram section.
  StreamBuilder& EndSection(std::uint32_t section_id) { return Eos().Footer(section_id); }

  // A record header: be64 word, then the idstr unless the block is the last
  // one named (then CONTINUE is set). `force_idstr` always names the block.
  StreamBuilder& RecordHeader(std::string_view block, std::uint64_t offset, std::uint32_t flags,
                              bool force_idstr = false) {
    bool cont = !force_idstr && have_last_ && block == last_block_;
    Be64(offset | flags | (cont ? stream_format::kFlagContinue : 0));
    if (!cont) {
      Counted(block);
      last_block_ = std::string(block);
      have_last_ = true;
    }
    return *this;
  }
  StreamBuilder& Page(std::string_view block, std::uint64_t offset, const std::uint8_t* data) {
    return RecordHeader(block, offset, stream_format::kFlagPage).Raw(data, kPageSize);
  }
  StreamBuilder& Zero(std::string_view block, std::uint64_t offset, std::uint8_t fill = 0) {
    return RecordHeader(block, offset, stream_format::kFlagZero).U8(fill);
  }

  // What follows the ram END: `devices` FULL-section-like device states
  // (header, opaque payload with zeros and 0x7e bytes, footer), EOF and a
  // VMDESCRIPTION of `json`.
  StreamBuilder& Tail(int devices = 3,
                      std::string_view json = R"({"page_size": 4096, "devices": []})") {
    std::uint32_t id = 100;
    for (int d = 0; d < devices; ++d, ++id) {
      U8(stream_format::kSectionFull).Be32(id).Counted("dev" + std::to_string(d)).Be32(0).Be32(1);
      // Payload bytes that look like a trailer start (but for the '{').
      Raw(
          std::string_view("\x7e\x00\x00\x00\x01\x00\x06\x00\x00\x00\x02"
                           "ab\x00\x7e",
                           15));
      for (int i = 0; i < 40; ++i) U8(static_cast<std::uint8_t>(i * 7));
      Footer(id);
    }
    U8(stream_format::kSectionEof).U8(stream_format::kSectionVmdesc);
    Be32(static_cast<std::uint32_t>(json.size())).Raw(json);
    return *this;
  }

  // Header, configuration, START with `blocks` under `ram_id`.
  StreamBuilder& Prologue(std::uint32_t ram_id, const std::vector<RamBlockInfo>& blocks) {
    return Header().Config().Start(ram_id, blocks);
  }

 private:
  std::vector<std::uint8_t> out_;
  std::vector<RamBlockInfo> blocks_;
  std::string last_block_;
  bool have_last_ = false;
};

}  // namespace escdr::test

#endif  // ESCDR_QEMU_STREAM_BUILDER_H_
