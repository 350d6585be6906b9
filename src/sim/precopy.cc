#include "escdr/sim/precopy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "escdr/page/page.h"

namespace escdr::sim {

PrecopyParams PrecopyParams::For(const KindSpec& kind, std::uint64_t memory_mib,
                                 double dirty_rate_mib_s, double working_set_fraction,
                                 bool elide_static, const MigrationOptions& options) {
  PrecopyParams p;
  p.memory_bytes = memory_mib << 20;
  p.zero_fraction = kind.zero_fraction;
  p.by_position_fraction = kind.by_position_fraction;
  p.by_content_fraction = kind.by_content_fraction;
  p.dirty_rate_bytes_s = dirty_rate_mib_s * 1048576.0;
  p.working_set_fraction = working_set_fraction;
  p.elide_static = elide_static;
  p.options = options;
  return p;
}

Precopy::Precopy(const PrecopyParams& params) : p_(params) {
  pages_ = (p_.memory_bytes + kPageSize - 1) / kPageSize;
  working_set_pages_ = static_cast<std::uint64_t>(
      std::floor(std::clamp(p_.working_set_fraction, 0.0, 1.0) * static_cast<double>(pages_)));
}

std::uint64_t Precopy::PageRecordBytes() const {
  return kPageSize + (p_.options.page_headers ? kPageRecordHeaderBytes : 0);
}

Round Precopy::Send(std::uint64_t stream_bytes, std::uint64_t wire_bytes, bool stop_and_copy) {
  ++rounds_;
  last_round_stream_bytes_ = stream_bytes;
  report_.stream_bytes += stream_bytes;
  report_.rebuilt_bytes += stream_bytes;
  report_.wire_bytes_sent += wire_bytes;
  if (stop_and_copy) done_ = true;
  return Round{stream_bytes, wire_bytes, stop_and_copy};
}

Round Precopy::First() {
  const double pages = static_cast<double>(pages_);
  auto count = [&](double fraction) {
    return static_cast<std::uint64_t>(std::llround(std::clamp(fraction, 0.0, 1.0) * pages));
  };
  const std::uint64_t zero = std::min(count(p_.zero_fraction), pages_);
  const std::uint64_t by_position = std::min(count(p_.by_position_fraction), pages_ - zero);
  const std::uint64_t by_content =
      std::min(count(p_.by_content_fraction), pages_ - zero - by_position);
  const std::uint64_t record = PageRecordBytes();

  std::uint64_t stream = 0;
  if (p_.options.zero_page_skipping) {
    const std::uint64_t zero_record = p_.options.page_headers ? kZeroRecordBytes : 1;
    stream = zero * zero_record + (pages_ - zero) * record;
    report_.zero_records += zero;
    report_.page_records += pages_ - zero;
  } else {
    stream = pages_ * record;
    report_.page_records += pages_;
  }
  std::uint64_t wire = stream;
  if (p_.elide_static) {
    const std::uint64_t elided = by_position + by_content;
    const auto references = static_cast<std::uint64_t>(
        std::llround(static_cast<double>(elided) * p_.options.reference_bytes_per_page));
    wire = stream - elided * record + references;
    report_.pages_by_position = by_position;
    report_.pages_by_content = by_content;
    report_.pages_from_donor = elided;
  }
  return Send(stream, wire, false);
}

Round Precopy::Next(double seconds) {
  const double dirtied = std::max(0.0, p_.dirty_rate_bytes_s * seconds) / kPageSize;
  const std::uint64_t dirty_pages =
      dirtied >= static_cast<double>(working_set_pages_)
          ? working_set_pages_
          : static_cast<std::uint64_t>(std::floor(dirtied));
  const std::uint64_t dirty_bytes = dirty_pages * PageRecordBytes();
  report_.page_records += dirty_pages;

  // The bandwidth the last round achieved, as QEMU measures it (stream bytes
  // written), decides what fits the downtime limit.
  const double bandwidth = seconds > 0 ? static_cast<double>(last_round_stream_bytes_) / seconds
                                       : std::numeric_limits<double>::infinity();
  const double threshold = bandwidth * p_.options.downtime_limit_ms / 1000.0;
  const bool fits = static_cast<double>(dirty_bytes) <= threshold;
  if (fits || rounds_ >= p_.options.max_rounds) {
    converged_ = fits;
    const auto device = static_cast<std::uint64_t>(std::llround(p_.options.device_state_kib * 1024));
    return Send(dirty_bytes + device, dirty_bytes + device, true);
  }
  return Send(dirty_bytes, dirty_bytes, false);
}

const char* CauseName(Cause cause) {
  switch (cause) {
    case Cause::kConsolidation:
      return "consolidation";
    case Cause::kLoadBalancing:
      return "load_balancing";
    case Cause::kDrain:
      return "drain";
  }
  return "unknown";
}

const char* PathTierName(PathTier tier) {
  switch (tier) {
    case PathTier::kSameRack:
      return "rack";
    case PathTier::kSamePod:
      return "pod";
    case PathTier::kCrossPod:
      return "core";
  }
  return "unknown";
}

}  // namespace escdr::sim
