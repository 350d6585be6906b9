// Integration test: real QEMU 7.2 guests migrated through SourceSession ->
// loopback TCP -> DestinationSession, with a donor's RAM file as the source
// of elided pages. Boots two test guests (source and donor, same kind) and
// starts a fresh destination QEMU (-incoming defer, -S) per migration.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "escdr/image/memory_image.h"
#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/qemu/launcher.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "escdr/sys/unix_socket.h"
#include "escdr/wire/socket.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using std::chrono::seconds;

constexpr const char* kRamBlock = "mem0";  // memory-backend-file id=mem0

// The catalog for these tests: every distinct non-zero page of the donor,
// each also static by position where the donor holds it.
Result<std::unique_ptr<StaticContentTable>> CatalogFromDonor(const MemoryImage& donor) {
  std::vector<PageHash> hashes;
  std::vector<StaticContentTable::Position> positions;
  const std::uint8_t* data = donor.BlockData(0);
  for (std::uint64_t off = 0; off < donor.blocks()[0].length; off += kPageSize) {
    if (IsZeroPage(data + off)) continue;
    PageHash h = HashPage(data + off);
    hashes.push_back(h);
    positions.push_back({kRamBlock, off, h});
  }
  return StaticContentTable::Create(VmKind{"debian", "12", "qemu", "7.2"}, 0xD0D0, hashes,
                                    positions);
}

// Pages (offsets) at which two RAM files differ; NotFound if sizes differ.
Result<std::vector<std::uint64_t>> DifferingPages(const std::string& a, const std::string& b) {
  ESCDR_ASSIGN_OR_RETURN(auto ia, OpenRamFile(a, kRamBlock));
  ESCDR_ASSIGN_OR_RETURN(auto ib, OpenRamFile(b, kRamBlock));
  if (ia->TotalBytes() != ib->TotalBytes()) {
    return Err(Status::NotFound(fmt::format("RAM files {} and {} differ in size", a, b)));
  }
  std::vector<std::uint64_t> diff;
  for (std::uint64_t off = 0; off < ia->TotalBytes(); off += kPageSize) {
    if (std::memcmp(ia->BlockData(0) + off, ib->BlockData(0) + off, kPageSize) != 0) {
      diff.push_back(off);
    }
  }
  return diff;
}

// One line per differing page (at most `max_pages`): what each side holds,
// and whether each side's content is catalog content (so could have been sent
// as a reference). Makes a rare mismatch diagnosable from the test log.
std::string DescribeDifferences(const std::string& source, const std::string& destination,
                                const std::vector<std::uint64_t>& pages,
                                const StaticContent& catalog, std::size_t max_pages = 32) {
  auto is = OpenRamFile(source, kRamBlock);
  auto id = OpenRamFile(destination, kRamBlock);
  if (!is.has_value() || !id.has_value()) return "(cannot open the RAM files)";
  std::string out;
  for (std::size_t i = 0; i < pages.size() && i < max_pages; ++i) {
    const std::uint64_t off = pages[i];
    const std::uint8_t* s = (*is)->BlockData(0) + off;
    const std::uint8_t* d = (*id)->BlockData(0) + off;
    std::size_t first = 0, bytes = 0;
    for (std::size_t b = 0; b < kPageSize; ++b) {
      if (s[b] != d[b]) {
        if (bytes++ == 0) first = b;
      }
    }
    auto side = [&](const std::uint8_t* p) {
      if (IsZeroPage(p)) return std::string("zero");
      return fmt::format("non-zero{}", catalog.Find(HashPage(p)) != kNoContent ? " (catalog)" : "");
    };
    out += fmt::format("\n  page {:#x}: source {}, destination {}, {} bytes differ from byte {}",
                       off, side(s), side(d), bytes, first);
    const std::size_t from = first & ~std::size_t{15};
    const std::size_t to = std::min<std::size_t>(kPageSize, from + 32);
    std::string hs, hd;
    for (std::size_t b = from; b < to; ++b) {
      hs += fmt::format("{:02x}", s[b]);
      hd += fmt::format("{:02x}", d[b]);
    }
    out += fmt::format("\n    source      @{}: {}\n    destination @{}: {}", from, hs, from, hd);
  }
  if (pages.size() > max_pages) out += fmt::format("\n  ... and {} more", pages.size() - max_pages);
  return out;
}

struct MigrationRun {
  Result<MigrationReport> source = Err(Status::Internal("not run"));
  Result<MigrationReport> destination = Err(Status::Internal("not run"));
  Result<MigrationInfo> qemu_info = Err(Status::Internal("not run"));
  std::string destination_state;
  std::vector<std::uint64_t> differing_pages;
  std::string differences;  // DescribeDifferences() of differing_pages
};

class SessionIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::GuestOptions base;
    base.memory_mib = 256;  // the size the agents' tests migrate
    testing::GuestOptions src = base, donor = base;
    src.name = "escdr-mig-source";
    donor.name = "escdr-mig-donor";
    auto guests = testing::TestGuest::BootMany({src, donor});
    if (!guests.has_value()) {
      boot_error_ = new std::string(guests.error().ToString());
      return;
    }
    source_ = (*guests)[0].release();
    donor_ = (*guests)[1].release();
  }
  static void TearDownTestSuite() {
    delete source_;
    delete donor_;
    delete boot_error_;
    source_ = donor_ = nullptr;
    boot_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_EQ(boot_error_, nullptr) << *boot_error_;
    // The donor is paused while a test reads it as a catalog, so that the
    // catalog and the scan agree; the tests change it on purpose when needed.
    ASSERT_TRUE(donor_->Pause().ok());
    auto image = OpenRamFile(donor_->ram_path(), kRamBlock);
    ASSERT_TRUE(image.has_value()) << image.error().ToString();
    donor_image_ = std::move(*image);
    auto catalog = CatalogFromDonor(*donor_image_);
    ASSERT_TRUE(catalog.has_value()) << catalog.error().ToString();
    catalog_ = std::move(*catalog);
  }

  // Migrates the source guest into a new destination QEMU through both sessions.
  MigrationRun Migrate(const std::function<void()>& after_offer = nullptr,
                       const SourceOptions& source_options = {}) {
    MigrationRun run;
    auto dir = TempDir::Create("escdr-mig", "/dev/shm");
    if (!dir.has_value()) {
      run.source = Err(dir.error());
      return run;
    }
    LaunchSpec spec = source_->spec();
    spec.name = "escdr-mig-destination";
    spec.ram_path = dir->File("ram");
    spec.qmp_socket = dir->File("qmp.sock");
    spec.serial_log = dir->File("serial.log");
    spec.incoming = "defer";
    spec.start_paused = true;  // ends paused, so its RAM can be compared
    auto dest = QemuProcess::Start(spec);
    if (!dest.has_value()) {
      run.destination = Err(dest.error());
      return run;
    }
    const std::string in_sock = dir->File("in.sock");
    const std::string out_sock = dir->File("out.sock");
    Status s = MigrateIncoming((*dest)->qmp(), "unix:" + in_sock);
    auto listen_out = ListenUnix(out_sock);
    auto agents = wire::TcpListener::Listen("127.0.0.1", 0);
    if (!s.ok() || !listen_out.has_value() || !agents.has_value()) {
      run.source = Err(!s.ok() ? s : !listen_out.has_value() ? listen_out.error() : agents.error());
      return run;
    }

    std::thread destination([&] {
      auto qemu = ConnectUnix(in_sock, seconds(30));
      auto peer = agents->Accept(Deadline::After(seconds(60)));
      if (!qemu.has_value() || !peer.has_value()) {
        run.destination = Err(!qemu.has_value() ? qemu.error() : peer.error());
        return;
      }
      auto session = DestinationSession::Accept(std::move(*peer));
      if (!session.has_value()) {
        run.destination = Err(session.error());
        return;
      }
      Status offer = (*session)->Offer(catalog_.get(), donor_image_.get());
      if (!offer.ok()) {
        run.destination = Err(offer);
        return;
      }
      if (after_offer) after_offer();
      auto conn = wire::WrapSocket(std::move(*qemu), "unix " + in_sock);
      run.destination = conn.has_value() ? (*session)->Run(std::move(*conn)) : Err(conn.error());
    });

    auto peer = wire::ConnectTcp("127.0.0.1", agents->port(), Deadline::After(seconds(30)));
    if (!peer.has_value()) {
      run.source = Err(peer.error());
    } else {
      SourceParams params{"escdr-mig-source", catalog_->kind(), 0};
      auto session = SourceSession::Connect(std::move(*peer), catalog_.get(), params,
                                            source_options);
      if (!session.has_value()) {
        run.source = Err(session.error());
      } else {
        QmpClient& qmp = source_->qmp();
        Status st = SetMigrationCapabilities(qmp, {{"return-path", true}});
        if (st.ok()) st = SetMigrationParameters(qmp, {{"max-bandwidth", 1ll << 32}});
        if (st.ok()) st = escdr::Migrate(qmp, "unix:" + out_sock);
        auto accepted = st.ok() ? AcceptUnix(listen_out->get(), seconds(60)) : Err(st);
        if (!accepted.has_value()) {
          run.source = Err(accepted.error());
          (*session)->Cancel("the source QEMU did not connect");
        } else {
          auto conn = wire::WrapSocket(std::move(*accepted), "unix " + out_sock);
          run.source = conn.has_value() ? (*session)->Run(std::move(*conn)) : Err(conn.error());
        }
        run.qemu_info = WaitForMigration(qmp, seconds(300));
      }
    }
    destination.join();
    ::unlink(out_sock.c_str());
    if (run.source.has_value() && run.destination.has_value()) {
      auto state = QueryStatus((*dest)->qmp());
      run.destination_state = state.has_value() ? *state : state.error().ToString();
      auto diff = DifferingPages(source_->ram_path(), spec.ram_path);
      if (diff.has_value()) {
        run.differing_pages = *diff;
        if (!diff->empty()) {
          auto source_state = QueryStatus(source_->qmp());
          run.differences =
              fmt::format(" (source {}, destination {}, destination serial log {} bytes)",
                          source_state.has_value() ? *source_state : source_state.error().ToString(),
                          run.destination_state,
                          ReadFileToString(spec.serial_log).value_or("").size()) +
              DescribeDifferences(source_->ram_path(), spec.ram_path, *diff, *catalog_);
        }
      } else {
        run.destination = Err(diff.error());
      }
    }
    (void)(*dest)->Stop();
    return run;
  }

  static testing::TestGuest* source_;
  static testing::TestGuest* donor_;
  static std::string* boot_error_;
  std::unique_ptr<MemoryImage> donor_image_;
  std::unique_ptr<StaticContentTable> catalog_;
};

testing::TestGuest* SessionIntegrationTest::source_ = nullptr;
testing::TestGuest* SessionIntegrationTest::donor_ = nullptr;
std::string* SessionIntegrationTest::boot_error_ = nullptr;

void Print(const char* what, const MigrationRun& run) {
  std::cout << "[ escdr ] " << what << ": " << run.source->Summary() << "\n"
            << "[ qemu  ] status " << run.qemu_info->status << ", total "
            << run.qemu_info->total_time_ms << " ms, downtime " << run.qemu_info->downtime_ms
            << " ms, normal " << run.qemu_info->ram_normal << ", duplicate "
            << run.qemu_info->ram_duplicate << "\n";
}

TEST_F(SessionIntegrationTest, LiveGuestMigratesByteExactWithDonorPages) {
  ASSERT_TRUE(source_->Resume().ok());
  MigrationRun run = Migrate();
  ASSERT_TRUE(run.source.has_value()) << run.source.error().ToString();
  ASSERT_TRUE(run.destination.has_value()) << run.destination.error().ToString();
  ASSERT_TRUE(run.qemu_info.has_value()) << run.qemu_info.error().ToString();
  Print("live source", run);
  EXPECT_EQ(run.qemu_info->status, "completed");
  EXPECT_EQ(run.destination_state, "paused");
  EXPECT_TRUE(run.differing_pages.empty())
      << run.differing_pages.size() << " pages differ:" << run.differences;
  const MigrationReport& r = *run.source;
  EXPECT_EQ(r.rebuilt_bytes, r.stream_bytes);
  EXPECT_GT(r.pages_elided(), 1000u);  // the guests share their kernel and initramfs
  EXPECT_EQ(r.pages_from_donor + r.fallbacks, r.pages_elided());
  // escdr's count of PAGE and ZERO records is QEMU's own.
  EXPECT_EQ(r.page_records, run.qemu_info->ram_normal);
  EXPECT_EQ(r.zero_records, run.qemu_info->ram_duplicate);
  EXPECT_LT(r.wire_bytes_sent + r.wire_bytes_received, r.stream_bytes);
  EXPECT_GT(r.return_path_bytes, 0u);  // PONG and SHUT came back
}

TEST_F(SessionIntegrationTest, DonorPagesChangedAfterTheScanAreFetchedFromTheSource) {
  // QEMU refuses to migrate a VM left in "postmigrate": run it, then stop it.
  ASSERT_TRUE(source_->Resume().ok());
  ASSERT_TRUE(source_->Pause().ok());  // frozen RAM: each page is sent exactly once
  auto src = OpenRamFile(source_->ram_path(), kRamBlock);
  ASSERT_TRUE(src.has_value());
  // Pages equal in source and donor at the same offset, whose content occurs
  // only there in both: each is elided once and copied from exactly that place.
  std::map<PageHash, int> count;
  const std::uint8_t* s = (*src)->BlockData(0);
  const std::uint8_t* d = donor_image_->BlockData(0);
  const std::uint64_t size = donor_image_->TotalBytes();
  for (std::uint64_t off = 0; off < size; off += kPageSize) {
    if (!IsZeroPage(s + off)) ++count[HashPage(s + off)];
    if (!IsZeroPage(d + off)) ++count[HashPage(d + off)];
  }
  std::vector<std::uint64_t> victims;
  // Above 1 MiB: the BIOS area holds copies of ROM blocks, sent again in those blocks.
  for (std::uint64_t off = 1 << 20; off < size && victims.size() < 5; off += kPageSize) {
    if (!IsZeroPage(s + off) && std::memcmp(s + off, d + off, kPageSize) == 0 &&
        count[HashPage(s + off)] == 2) {
      victims.push_back(off);
    }
  }
  ASSERT_EQ(victims.size(), 5u);
  auto corrupt = [&] {
    UniqueFd fd(::open(donor_->ram_path().c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    for (std::uint64_t off : victims) {
      const std::uint8_t junk[8] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4};
      ASSERT_EQ(::pwrite(fd.get(), junk, sizeof(junk), static_cast<off_t>(off + 64)), 8);
    }
  };
  MigrationRun run = Migrate(corrupt);
  ASSERT_TRUE(run.source.has_value()) << run.source.error().ToString();
  ASSERT_TRUE(run.destination.has_value()) << run.destination.error().ToString();
  ASSERT_TRUE(run.qemu_info.has_value()) << run.qemu_info.error().ToString();
  Print("paused source, 5 donor pages changed", run);
  EXPECT_EQ(run.qemu_info->status, "completed");
  EXPECT_TRUE(run.differing_pages.empty())
      << run.differing_pages.size() << " pages differ:" << run.differences;
  EXPECT_EQ(run.source->fallbacks, victims.size());
  EXPECT_EQ(run.destination->fallbacks, victims.size());
}

// Not a timing assertion: it migrates the live guest alternately without
// and with the stream budget (wire-protocol §6) and prints QEMU's downtime
// for each, the figure docs/agent.md "Downtime, measured" quotes. It checks
// that both rebuild the guest exactly and that the budget held.
TEST_F(SessionIntegrationTest, DowntimeWithoutAndWithTheStreamBudget) {
  const SourceOptions with_budget;
  SourceOptions unbounded;
  unbounded.max_stream_in_flight = 0;
  for (int round = 0; round < 2; ++round) {
    for (const SourceOptions* o : std::vector<const SourceOptions*>{&unbounded, &with_budget}) {
      ASSERT_TRUE(source_->Resume().ok());
      MigrationRun run = Migrate(nullptr, *o);
      ASSERT_TRUE(run.source.has_value()) << run.source.error().ToString();
      ASSERT_TRUE(run.destination.has_value()) << run.destination.error().ToString();
      ASSERT_TRUE(run.qemu_info.has_value()) << run.qemu_info.error().ToString();
      Print(o->max_stream_in_flight == 0 ? "no budget" : "budget 8 MiB", run);
      EXPECT_EQ(run.qemu_info->status, "completed");
      EXPECT_TRUE(run.differing_pages.empty())
          << run.differing_pages.size() << " pages differ:"
          << run.differences;
      if (o->max_stream_in_flight != 0) {
        EXPECT_LE(run.source->max_stream_in_flight, o->max_stream_in_flight);
      }
    }
  }
}

}  // namespace
}  // namespace escdr
