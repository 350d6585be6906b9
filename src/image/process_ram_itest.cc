// Real QEMU check of ReadProcessRam and qemu/ram_map.h.
//
// Boots the test guest (docs/test-guest.md) on QEMU with anonymous (or memfd)
// guest RAM, as libvirt runs it: no memory-backend-file, so escdr's launcher
// is not used. Once the guest has booted it is paused, its main RAM block is
// found over QMP (QueryMainRam) and copied out of QEMU with process_vm_readv
// (ReadProcessRam); the copy must equal, page for page, the same RAM as
// QEMU's own migration stream carries it (LoadMigrationStream), and sampled
// words must equal what HMP `xp` prints. The error cases run against this
// process and against processes that are gone.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"
#include "escdr/qemu/qemu_install.h"
#include "escdr/qemu/qmp.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/ram_map.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// 256 MiB plus the 8 KiB that escdr's launcher adds under TCG
// (kTcgRamPadBytes): a main block that is not a multiple of the 2 MiB chunk.
constexpr std::uint64_t kRamBytes = (std::uint64_t{256} << 20) + 8192;

#define ASSERT_OK(expr)                                                  \
  do {                                                                   \
    ::escdr::Status assert_ok_status_ = (expr);                          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_.ToString(); \
  } while (0)

// RssAnon + RssShmem of `pid` in KiB (/proc/<pid>/status), or 0.
std::uint64_t RssKib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  std::uint64_t kib = 0;
  while (std::getline(in, line)) {
    if (line.starts_with("RssAnon:") || line.starts_with("RssShmem:")) {
      kib += std::stoull(line.substr(line.find(':') + 1));
    }
  }
  return kib;
}

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The test guest on a QEMU started here, without a RAM file. The destructor
// kills this QEMU (by its pidfd) and removes its directory, however the test
// ended.
class AnonymousGuest {
 public:
  // `qemu`: "" for the host's QEMU, else a tree of tools/install-qemu.sh.
  // `memory_args`: extra options that choose the memory backend (none:
  // QEMU's default anonymous memory).
  static Result<std::unique_ptr<AnonymousGuest>> Boot(
      const std::string& qemu, const std::vector<std::string>& memory_args = {}) {
    auto g = std::unique_ptr<AnonymousGuest>(new AnonymousGuest);
    ESCDR_ASSIGN_OR_RETURN(std::string guest_dir, testing::EnsureGuestBuilt());
    ESCDR_ASSIGN_OR_RETURN(QemuInstall install,
                           ProbeQemuInstall(qemu.empty() ? "qemu-system-x86_64" : qemu));
    g->version_ = install.version;
    ESCDR_ASSIGN_OR_RETURN(g->dir_, TempDir::Create("escdr-process-ram"));
    g->serial_ = g->dir_.File("serial.log");
    const std::string qmp_path = g->dir_.File("qmp.sock");
    SubprocessOptions opts;
    opts.argv = install.command;
    opts.argv.insert(opts.argv.end(), {"-name",
                                       "escdr-process-ram",
                                       "-accel",
                                       "tcg",
                                       "-machine",
                                       "pc",
                                       "-m",
                                       fmt::format("{}K", kRamBytes / 1024),
                                       "-smp",
                                       "1",
                                       "-nodefaults",
                                       "-nographic",
                                       "-no-user-config",
                                       "-monitor",
                                       "none",
                                       "-serial",
                                       "file:" + g->serial_,
                                       "-qmp",
                                       "unix:" + qmp_path + ",server=on,wait=off",
                                       "-nic",
                                       "none",
                                       "-kernel",
                                       guest_dir + "/vmlinuz",
                                       "-initrd",
                                       guest_dir + "/initrd.img",
                                       "-append",
                                       "console=ttyS0 quiet nokaslr"});
    opts.argv.insert(opts.argv.end(), memory_args.begin(), memory_args.end());
    opts.env = install.env;
    opts.stdout_path = opts.stderr_path = g->dir_.File("qemu.log");
    ESCDR_ASSIGN_OR_RETURN(g->process_, Subprocess::Spawn(opts));
    AnonymousGuest* self = g.get();
    ESCDR_ASSIGN_OR_RETURN(g->qmp_,
                           QmpClient::Connect(qmp_path, 60s, [self] { return self->Alive(); }));
    const auto deadline = std::chrono::steady_clock::now() + 300s;
    while (true) {
      ESCDR_RETURN_IF_ERROR(g->Alive());
      ESCDR_ASSIGN_OR_RETURN(std::optional<std::uint64_t> counter, ReadLastCounter(g->serial_));
      if (counter && *counter >= 2) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return Err(Status::Timeout("test guest did not boot in 300 s: " + g->Diagnostics()));
      }
      std::this_thread::sleep_for(100ms);
    }
    return g;
  }

  ~AnonymousGuest() {
    qmp_.reset();
    // Only the QEMU this object started: Subprocess signals it by its pidfd.
    if (process_.valid()) {
      (void)process_.Kill(SIGKILL);
      (void)process_.Wait();
    }
  }
  AnonymousGuest(const AnonymousGuest&) = delete;
  AnonymousGuest& operator=(const AnonymousGuest&) = delete;

  QmpClient& qmp() { return *qmp_; }
  pid_t pid() const { return process_.pid(); }
  const std::string& version() const { return version_; }
  std::string File(const std::string& name) const { return dir_.File(name); }

  std::string Diagnostics() const {
    std::ifstream in(dir_.File("qemu.log"));
    std::stringstream log;
    log << in.rdbuf();
    return fmt::format("serial log:\n{}QEMU log:\n{}", SerialLogTail(serial_), log.str());
  }

 private:
  AnonymousGuest() = default;

  Status Alive() {
    auto st = process_.TryWait();
    if (!st.has_value()) return st.error();
    if (st->has_value()) return Status::Aborted("QEMU exited: " + (*st)->ToString());
    return Status::OK();
  }

  TempDir dir_;
  std::string serial_;
  std::string version_;
  Subprocess process_;
  std::unique_ptr<QmpClient> qmp_;
};

// The 8-byte words HMP `xp /Nxg ADDR` prints: "0000000000100000: 0x... 0x...".
Result<std::vector<std::uint64_t>> ParseXp(const std::string& out) {
  std::vector<std::uint64_t> words;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    std::string token;
    in >> token;  // the address
    if (token.empty()) continue;
    if (token.back() != ':') return Err(Status::ProtocolError("xp printed " + out));
    while (in >> token) {
      if (!token.starts_with("0x")) return Err(Status::ProtocolError("xp printed " + out));
      words.push_back(std::stoull(token.substr(2), nullptr, 16));
    }
  }
  return words;
}

// Boots the guest on `qemu`, reads its main RAM both ways and compares.
void CheckReadMatchesQemu(const std::string& qemu, const std::vector<std::string>& memory_args,
                          const std::string& expected_block) {
  const bool anonymous = memory_args.empty();
  auto boot_start = std::chrono::steady_clock::now();
  auto guest = AnonymousGuest::Boot(qemu, memory_args);
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  AnonymousGuest& g = **guest;
  std::cout << fmt::format("QEMU {} booted the test guest in {:.1f} s\n", g.version(),
                           SecondsSince(boot_start));
  ASSERT_OK(Stop(g.qmp()));

  HmpRunner hmp = HmpOverQmp(g.qmp());
  auto ram = QueryMainRam(hmp);
  ASSERT_TRUE(ram.has_value()) << ram.error().ToString();
  EXPECT_EQ(ram->block, expected_block);
  EXPECT_EQ(ram->length, kRamBytes);

  const std::uint64_t rss_before = RssKib(g.pid());
  auto read_start = std::chrono::steady_clock::now();
  auto image = ReadProcessRam(g.pid(), {*ram});
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  const double read_s = SecondsSince(read_start);
  const std::uint64_t rss_after = RssKib(g.pid());
  std::cout << fmt::format("QEMU's RssAnon+RssShmem: {} KiB before the read, {} KiB after\n",
                           rss_before, rss_after);
  if (anonymous) {
    // Pages the guest never touched are skipped, not faulted in.
    EXPECT_LT(rss_after, rss_before + 4096) << "reading must not commit the guest's idle RAM";
  }
  ASSERT_EQ((*image)->blocks().size(), 1u);
  EXPECT_EQ((*image)->blocks()[0], (RamBlockInfo{expected_block, kRamBytes}));
  const std::uint8_t* got = (*image)->BlockData(0);
  const std::size_t pages = kRamBytes / kPageSize;
  // Residency first: reading an untouched page maps the shared zero page,
  // which mincore counts as resident.
  std::size_t resident = 0;
  {
    std::vector<unsigned char> vec(pages);
    ASSERT_EQ(::mincore(const_cast<std::uint8_t*>(got), kRamBytes, vec.data()), 0);
    for (unsigned char v : vec) resident += v & 1;
  }
  std::size_t nonzero = 0;
  for (std::size_t p = 0; p < pages; ++p) nonzero += IsZeroPage(got + p * kPageSize) ? 0 : 1;
  std::cout << fmt::format(
      "ReadProcessRam: {} MiB in {:.3f} s, {} of {} pages non-zero, {} pages resident\n",
      kRamBytes >> 20, read_s, nonzero, pages, resident);
  // The kernel and the initramfs are in RAM, and most of RAM is untouched.
  EXPECT_GT(nonzero, 1000u);
  EXPECT_LT(nonzero, pages / 2);
  EXPECT_EQ(resident, nonzero) << "zero pages must cost no memory";

  // Sampled words against HMP xp (guest-physical = block offset below
  // 3.5 GiB on "pc"; the first MiB is skipped: ROM and VGA windows lie over it).
  int sampled_nonzero = 0;
  int sampled_zero = 0;
  for (std::size_t p = 256; p < pages && (sampled_nonzero < 12 || sampled_zero < 4); p += 97) {
    const std::uint8_t* page = got + p * kPageSize;
    int& sampled = IsZeroPage(page) ? sampled_zero : sampled_nonzero;
    if (sampled >= (IsZeroPage(page) ? 4 : 12)) continue;
    auto out = hmp(fmt::format("xp /4xg {:#x}", p * kPageSize + 64));
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    auto words = ParseXp(*out);
    ASSERT_TRUE(words.has_value()) << words.error().ToString();
    ASSERT_EQ(words->size(), 4u) << *out;
    for (int w = 0; w < 4; ++w) {
      std::uint64_t mine = 0;
      std::memcpy(&mine, page + 64 + 8 * w, 8);
      EXPECT_EQ(mine, (*words)[w]) << "page " << p << " word " << w << ": xp printed " << *out;
    }
    ++sampled;
  }
  EXPECT_EQ(sampled_nonzero, 12);
  EXPECT_EQ(sampled_zero, 4);

  // The whole block against QEMU's own migration stream of the paused guest.
  const std::string stream = g.File("stream");
  ASSERT_OK(Migrate(g.qmp(), "exec:cat > " + stream + ".part && mv " + stream + ".part " + stream));
  auto info = WaitForMigration(g.qmp(), 300s);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  for (int i = 0; i < 3000 && ::access(stream.c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  auto saved = LoadMigrationStream(stream);
  ASSERT_TRUE(saved.has_value()) << saved.error().ToString();
  const int index = (*saved)->FindBlock(expected_block);
  ASSERT_GE(index, 0);
  ASSERT_EQ((*saved)->blocks()[index].length, kRamBytes);
  const std::uint8_t* want = (*saved)->BlockData(static_cast<std::size_t>(index));
  std::size_t differing = 0;
  std::string first;
  for (std::size_t p = 0; p < pages; ++p) {
    if (std::memcmp(got + p * kPageSize, want + p * kPageSize, kPageSize) != 0) {
      if (differing++ < 5) first += fmt::format(" {:#x}", p * kPageSize);
    }
  }
  EXPECT_EQ(differing, 0u) << "pages differing from the migration stream, first at" << first;

  // A range this QEMU has not mapped is NotFound, naming the block.
  auto bad = ReadProcessRam(g.pid(), {RamMapping{"unmapped", 0x1000, 2 * kPageSize}});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(bad.error().message(), HasSubstr("'unmapped'"));
  EXPECT_THAT(bad.error().message(), HasSubstr(fmt::format("process {}", g.pid())));
}

TEST(ProcessRamTest, AnonymousRamOfQemu72MatchesItsMigrationStream) {
  CheckReadMatchesQemu("", {}, "pc.ram");
}

TEST(ProcessRamTest, MemfdRamOfQemu72MatchesItsMigrationStream) {
  CheckReadMatchesQemu("",
                       {"-machine", "memory-backend=mem0", "-object",
                        fmt::format("memory-backend-memfd,id=mem0,size={}K", kRamBytes / 1024)},
                       "mem0");
}

TEST(ProcessRamTest, AnonymousRamOfQemu100MatchesItsMigrationStream) {
  const std::string tree = testing::Qemu10Dir();
  if (tree.empty()) {
    GTEST_SKIP() << "QEMU 10.0 is not installed: run tools/install-qemu.sh 10.0 or set "
                    "ESCDR_QEMU10_DIR";
  }
  CheckReadMatchesQemu(tree, {}, "pc.ram");
}

// This process's own memory: pages with content, zero pages, a hole.
class SelfMemory {
 public:
  explicit SelfMemory(std::size_t pages) : pages_(pages) {
    void* a = ::mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a != MAP_FAILED) base_ = static_cast<std::uint8_t*>(a);
  }
  ~SelfMemory() {
    if (base_ != nullptr) ::munmap(base_, pages_ * kPageSize);
  }
  SelfMemory(const SelfMemory&) = delete;
  SelfMemory& operator=(const SelfMemory&) = delete;

  std::uint8_t* page(std::size_t p) const { return base_ + p * kPageSize; }
  std::uint64_t address() const { return reinterpret_cast<std::uintptr_t>(base_); }

 private:
  std::size_t pages_;
  std::uint8_t* base_ = nullptr;
};

TEST(ProcessRamTest, ReadsOwnMemoryStoringOnlyNonZeroPages) {
  // 1200 pages: more than two 2 MiB chunks, the last one short.
  constexpr std::size_t kPages = 1200;
  SelfMemory mem(kPages);
  ASSERT_NE(mem.address(), 0u);
  std::size_t written = 0;
  for (std::size_t p = 0; p < kPages; p += 7) {
    std::memset(mem.page(p), static_cast<int>(p % 251) + 1, kPageSize);
    ++written;
  }
  mem.page(kPages - 1)[kPageSize - 1] = 0x5a;  // one byte is enough
  ++written;
  std::memset(mem.page(3), 0, kPageSize);  // touched, but zero
  auto image = ReadProcessRam(::getpid(), {RamMapping{"self", mem.address(), kPages * kPageSize}});
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  EXPECT_EQ((*image)->source(), fmt::format("process {}", ::getpid()));
  const std::uint8_t* got = (*image)->BlockData(0);
  // Before any read of the copy: see CheckReadMatchesQemu.
  std::vector<unsigned char> vec(kPages);
  ASSERT_EQ(::mincore(const_cast<std::uint8_t*>(got), kPages * kPageSize, vec.data()), 0);
  std::size_t resident = 0;
  for (unsigned char v : vec) resident += v & 1;
  EXPECT_EQ(resident, written);
  EXPECT_EQ(std::memcmp(got, mem.page(0), kPages * kPageSize), 0);
}

TEST(ProcessRamTest, HoleInTheRangeIsNotFoundNamingBlockAndAddress) {
  SelfMemory mem(8);
  ASSERT_NE(mem.address(), 0u);
  ASSERT_EQ(::munmap(mem.page(5), kPageSize), 0);
  auto image = ReadProcessRam(::getpid(), {RamMapping{"holey", mem.address(), 8 * kPageSize}});
  ::mmap(mem.page(5), kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
         -1, 0);  // give SelfMemory its page back
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(image.error().message(), HasSubstr("RAM block 'holey'"));
  EXPECT_THAT(image.error().message(), HasSubstr(fmt::format("process {}", ::getpid())));
  EXPECT_THAT(image.error().message(),
              HasSubstr(fmt::format("address {:#x} is not mapped", mem.address() + 5 * kPageSize)));
}

TEST(ProcessRamTest, GoneProcessIsNotFound) {
  SubprocessOptions opts;
  opts.argv = {"true"};
  auto child = Subprocess::Spawn(opts);
  ASSERT_TRUE(child.has_value()) << child.error().ToString();
  const pid_t pid = child->pid();
  ASSERT_TRUE(child->Wait().has_value());  // reaped: the pid names no process now
  auto image = ReadProcessRam(pid, {RamMapping{"pc.ram", 0x7f0000000000, kPageSize}});
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(image.error().message(), HasSubstr(fmt::format("'pc.ram' of process {}", pid)));
  EXPECT_THAT(image.error().message(), HasSubstr("no such process"));
}

TEST(ProcessRamTest, BadLengthsAreInvalidArguments) {
  SelfMemory mem(2);
  for (std::uint64_t length : {std::uint64_t{0}, std::uint64_t{kPageSize + 1}}) {
    auto image = ReadProcessRam(::getpid(), {RamMapping{"odd", mem.address(), length}});
    ASSERT_FALSE(image.has_value());
    EXPECT_EQ(image.error().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(image.error().message(), HasSubstr("RAM block 'odd'"));
  }
  auto none = ReadProcessRam(::getpid(), {});
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kInvalidArgument);
}

TEST(ProcessRamTest, UnprivilegedReaderIsFailedPrecondition) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to drop to an unprivileged user";
  SelfMemory mem(1);
  mem.page(0)[0] = 1;
  const pid_t parent = ::getpid();
  // The child drops to "nobody" and reads this (root) process.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    auto image = ReadProcessRam(parent, {RamMapping{"pc.ram", mem.address(), kPageSize}});
    const bool ok = !image.has_value() && image.error().code() == StatusCode::kFailedPrecondition &&
                    image.error().message().find("CAP_SYS_PTRACE") != std::string::npos;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace escdr
