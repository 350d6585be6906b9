#include "escdr/migrate/migration_report.h"

#include <fmt/format.h>

#include "escdr/wire/codec.h"

namespace escdr {
namespace {

std::string Bytes(std::uint64_t n) {
  if (n >= (1ull << 30)) return fmt::format("{:.2f} GiB", n / double(1ull << 30));
  if (n >= (1ull << 20)) return fmt::format("{:.1f} MiB", n / double(1ull << 20));
  if (n >= (1ull << 10)) return fmt::format("{:.1f} KiB", n / double(1ull << 10));
  return fmt::format("{} B", n);
}

}  // namespace

std::string MigrationReport::CodecLabel() const {
  return wire::CodecSpec{static_cast<wire::Codec>(codec), codec_level}.ToString();
}

std::string MigrationReport::Summary() const {
  const std::uint64_t wire = wire_bytes_sent + wire_bytes_received;
  const double share = stream_bytes ? 100.0 * double(wire) / double(stream_bytes) : 0.0;
  std::string s = fmt::format(
      "stream {}, wire {} ({:.1f}% of the stream), elided {} of {} pages (position {}, content "
      "{}), window full {}, from donor {}, fallbacks {}, zero records {}, available {}/{}, "
      "total {:.3f} s",
      Bytes(stream_bytes), Bytes(wire), share, pages_elided(), page_records, pages_by_position,
      pages_by_content, pages_window_full, pages_from_donor, fallbacks, zero_records,
      available_entries, catalog_entries, total_time.count() / 1e6);
  if (downtime_measured) s += fmt::format(", downtime {:.1f} ms", downtime.count() / 1e3);
  s += fmt::format(", deduplicated {} pages, codec {}", pages_deduplicated, CodecLabel());
  if (codec_frame_bytes > 0) {
    s += fmt::format(" ({} of frames sent as {}, {:.3f} CPU s)", Bytes(codec_frame_bytes),
                     Bytes(codec_wire_bytes), codec_cpu_time.count() / 1e6);
  }
  if (max_stream_in_flight > 0) {
    s += fmt::format(", peak in flight {}, budget waits {} ({:.3f} s)", Bytes(max_stream_in_flight),
                     budget_waits, budget_wait_time.count() / 1e6);
  }
  return s;
}

}  // namespace escdr
