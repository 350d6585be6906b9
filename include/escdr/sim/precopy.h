// Precopy: the round-by-round model of one QEMU pre-copy live migration, and
// MigrationRecord, what the simulator records of each migration.
//
// The model is the one SimGrid's live-migration plugin implements
// (src/plugins/vm/VmLiveMigration.cpp), with QEMU's stream costs added:
//   round 1      every page of the guest: a ZERO record (9 bytes) for a zero
//                page, a PAGE record (8 + 4096 bytes) for any other; with
//                ESCDR and a donor at the destination, static pages (catalog
//                content) go as references of reference_bytes_per_page;
//   round k > 1  the pages the guest dirtied during round k-1:
//                min(dirty rate x round k-1's duration, working set), in whole
//                pages, all PAGE records (dirtied pages are not static);
//   stop-and-copy when the dirty remainder fits the downtime limit at the
//                bandwidth the last round achieved (remainder <= bytes/s x
//                limit), or after max_rounds rounds: the remainder plus the
//                device state, with the guest paused (the downtime). The
//                bandwidth is QEMU's: the stream bytes it wrote over the
//                round's duration (with ESCDR more than crossed the network).
// The durations come from the caller (the network simulation), so congestion
// lengthens rounds and grows the dirty remainder, as it does in reality. A
// round ends when its wire bytes have crossed the network and, if set, no
// sooner than its stream bytes / QEMU's max-bandwidth (QEMU's rate limiter
// acts on the stream, before ESCDR elides) and its stream bytes / the
// source's stream rate (kernel.cc).
// With zero_page_skipping and page_headers off, device state 0 and ESCDR off,
// the bytes of each round equal the plugin's (up to whole pages).
//
// Thread safety: a Precopy is a plain value used by one migration.
#ifndef ESCDR_SIM_PRECOPY_H_
#define ESCDR_SIM_PRECOPY_H_

#include <cstdint>
#include <type_traits>

#include "escdr/migrate/migration_report.h"
#include "escdr/sim/scenario.h"

namespace escdr::sim {

// QEMU 7.2 stream record sizes (docs/qemu-migration-stream.md §3.3).
inline constexpr std::uint64_t kZeroRecordBytes = 9;
inline constexpr std::uint64_t kPageRecordHeaderBytes = 8;

struct PrecopyParams {
  std::uint64_t memory_bytes = 0;
  double zero_fraction = 0;         // of all pages
  double by_position_fraction = 0;  // of all pages: catalog pages at their position
  double by_content_fraction = 0;   // of all pages: catalog content elsewhere
  double dirty_rate_bytes_s = 0;
  double working_set_fraction = 1;  // most distinct pages dirtied, of all pages
  bool elide_static = false;        // ESCDR on and the destination has a donor
  MigrationOptions options;

  // Builds the parameters of a VM of `memory_mib` of `kind` under `options`.
  static PrecopyParams For(const KindSpec& kind, std::uint64_t memory_mib, double dirty_rate_mib_s,
                           double working_set_fraction, bool elide_static,
                           const MigrationOptions& options);
};

// One transfer the migration asks the network for.
struct Round {
  std::uint64_t stream_bytes = 0;  // bytes of QEMU's stream this round
  std::uint64_t wire_bytes = 0;    // bytes this round puts on the network
  bool stop_and_copy = false;    // the guest is paused during this round
};

class Precopy {
 public:
  explicit Precopy(const PrecopyParams& params);

  // The first round (the whole of RAM).
  Round First();
  // The round after the one just sent, which took `seconds` of network time.
  // After a stop_and_copy round the migration is over: REQUIRES !done().
  Round Next(double seconds);
  bool done() const { return done_; }

  std::uint32_t rounds() const { return rounds_; }
  // False when max_rounds forced stop-and-copy above the downtime limit.
  bool converged() const { return converged_; }
  // Field-by-field figures of the migration so far (times left to the caller).
  const MigrationReport& report() const { return report_; }
  // The stream bytes QEMU wrote (= what plain pre-copy sends).
  std::uint64_t stream_bytes() const { return report_.stream_bytes; }
  // Bytes on the network: stream_bytes minus elided pages plus references.
  std::uint64_t wire_bytes() const { return report_.wire_bytes_sent; }

 private:
  std::uint64_t PageRecordBytes() const;
  Round Send(std::uint64_t stream_bytes, std::uint64_t wire_bytes, bool stop_and_copy);

  PrecopyParams p_;
  std::uint64_t pages_ = 0;
  std::uint64_t working_set_pages_ = 0;
  std::uint64_t last_round_stream_bytes_ = 0;
  std::uint32_t rounds_ = 0;
  bool converged_ = true;
  bool done_ = false;
  MigrationReport report_;
};

// Why a migration ran.
enum class Cause : std::uint8_t { kConsolidation, kLoadBalancing, kDrain };
const char* CauseName(Cause cause);

// Where the route went: the highest link tier it crossed.
enum class PathTier : std::uint8_t { kSameRack, kSamePod, kCrossPod };
const char* PathTierName(PathTier tier);

// What the simulator records of one migration. Times are simulated seconds.
// `report` holds the same figures an escdr migration records (STYLE §6.13):
// stream_bytes is what QEMU wrote, wire_bytes_sent what crossed the network
// (equal for plain pre-copy), total_time from the first byte offered to the
// network to the end of stop-and-copy (QEMU's total-time: the scenario's setup
// and donor scan are in duration_s() only), downtime the stop-and-copy round
// (device state included). Trivially copyable: runs send records between
// processes as bytes.
struct MigrationRecord {
  std::uint32_t vm = 0;
  std::uint32_t kind = 0;         // index into Scenario::kinds
  std::uint32_t source = 0;       // host index (see HostName in simulator.h)
  std::uint32_t destination = 0;
  std::uint32_t memory_mib = 0;
  std::uint32_t rounds = 0;       // stop-and-copy included
  Cause cause = Cause::kDrain;
  PathTier tier = PathTier::kSameRack;
  bool has_donor = false;         // the destination ran a VM of the same kind
  bool escdr = false;             // the run used ESCDR
  bool converged = true;
  double start_s = 0;             // destination chosen; setup, then the first round
  double end_s = 0;               // stop-and-copy delivered; the VM runs at the destination
  double downtime_s = 0;          // the stop-and-copy round
  std::uint64_t bytes_saved = 0;  // stream_bytes - wire_bytes_sent (ESCDR's saving)
  MigrationReport report;

  double duration_s() const { return end_s - start_s; }
};
static_assert(std::is_trivially_copyable_v<MigrationRecord>);

}  // namespace escdr::sim

#endif  // ESCDR_SIM_PRECOPY_H_
