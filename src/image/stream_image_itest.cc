// Real QEMU 7.2 check of the stream parser and of LoadMigrationStream.
//
// Boots QEMU with no kernel (SeaBIOS alone runs, and writes RAM of its own),
// writes distinctive patterns into guest RAM through the share=on RAM file,
// stops the guest, saves a migration stream, and checks that the stream
// rebuilds exactly the guest's RAM, that the block list is QEMU's own
// ("info ramblock"), that the record counts are QEMU's ("query-migrate"), and
// that what escdr refuses is refused.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"
#include "escdr/qemu/qmp.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unix_socket.h"

namespace escdr {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr std::uint64_t kRamMib = 64;
constexpr std::uint64_t kRamBytes = kRamMib << 20;
constexpr std::uint64_t kPatternStart = 16 << 20;  // away from SeaBIOS's low and high RAM
constexpr int kPatternPages = 64;

#define ASSERT_OK(expr)                                                  \
  do {                                                                   \
    ::escdr::Status assert_ok_status_ = (expr);                          \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_.ToString(); \
  } while (0)

// One QEMU with SeaBIOS only, its RAM in a share=on file; killed and its
// files removed on destruction, whatever the test did.
class BareQemu {
 public:
  static Result<std::unique_ptr<BareQemu>> Start(const std::string& machine,
                                                 const std::vector<std::string>& extra = {}) {
    auto q = std::unique_ptr<BareQemu>(new BareQemu);
    ESCDR_ASSIGN_OR_RETURN(q->dir_, TempDir::Create("escdr-itest", "/dev/shm"));
    q->ram_path_ = q->dir_.File("ram");
    std::string qmp_path = q->dir_.File("qmp");
    SubprocessOptions opts;
    opts.argv = {"qemu-system-x86_64",
                 "-accel",
                 "tcg",
                 "-M",
                 machine,
                 "-m",
                 std::to_string(kRamMib),
                 "-nographic",
                 "-nodefaults",
                 "-serial",
                 "none",
                 "-object",
                 "memory-backend-file,id=mem0,size=" + std::to_string(kRamMib) +
                     "M,mem-path=" + q->ram_path_ + ",share=on",
                 "-machine",
                 "memory-backend=mem0",
                 "-qmp",
                 "unix:" + qmp_path + ",server=on,wait=off"};
    opts.argv.insert(opts.argv.end(), extra.begin(), extra.end());
    opts.stdout_path = opts.stderr_path = q->dir_.File("qemu.log");
    ESCDR_ASSIGN_OR_RETURN(q->process_, Subprocess::Spawn(opts));
    Subprocess* proc = &q->process_;
    ESCDR_ASSIGN_OR_RETURN(q->qmp_, QmpClient::Connect(qmp_path, 60s, [proc]() -> Status {
                             auto st = proc->TryWait();
                             if (st.has_value() && st->has_value()) {
                               return Status::Aborted("QEMU exited: " + (*st)->ToString());
                             }
                             return Status::OK();
                           }));
    return q;
  }

  ~BareQemu() {
    if (qmp_ != nullptr) (void)Quit(*qmp_);
    qmp_.reset();
    if (process_.valid() && !process_.WaitFor(10s).has_value()) {
      (void)process_.Kill(SIGKILL);
      (void)process_.Wait();
    }
  }

  QmpClient& qmp() { return *qmp_; }
  const std::string& ram_path() const { return ram_path_; }
  std::string File(const std::string& name) const { return dir_.File(name); }
  std::string Log() const {
    std::ifstream in(dir_.File("qemu.log"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Saves the stream to `path` with migrate "exec:..."; returns the final
  // query-migrate. The file appears (renamed) only once cat has finished.
  Result<MigrationInfo> SaveStream(const std::string& path) {
    ESCDR_RETURN_IF_ERROR(
        Migrate(*qmp_, "exec:cat > " + path + ".part && mv " + path + ".part " + path));
    ESCDR_ASSIGN_OR_RETURN(MigrationInfo info, WaitForMigration(*qmp_, 300s));
    for (int i = 0; i < 3000; ++i) {
      if (::access(path.c_str(), F_OK) == 0) return info;
      std::this_thread::sleep_for(10ms);
    }
    return Err(Status::Timeout("saved stream " + path + " did not appear after migration"));
  }

 private:
  BareQemu() = default;
  TempDir dir_;
  std::string ram_path_;
  Subprocess process_;
  std::unique_ptr<QmpClient> qmp_;
};

// A read-write shared mapping of the guest's RAM file.
class RamMapping {
 public:
  explicit RamMapping(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) == kRamBytes) {
      void* p = ::mmap(nullptr, kRamBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) data_ = static_cast<std::uint8_t*>(p);
    }
    ::close(fd);
  }
  ~RamMapping() {
    if (data_ != nullptr) ::munmap(data_, kRamBytes);
  }
  RamMapping(const RamMapping&) = delete;
  RamMapping& operator=(const RamMapping&) = delete;
  std::uint8_t* data() const { return data_; }

 private:
  std::uint8_t* data_ = nullptr;
};

// Page i of the patterns: uniform, random, text, one byte at the end, or zero.
std::vector<std::uint8_t> PatternPage(int i) {
  std::vector<std::uint8_t> p(kPageSize, 0);
  switch (i % 5) {
    case 0:
      std::fill(p.begin(), p.end(), static_cast<std::uint8_t>(0xa0 + i));
      break;
    case 1: {
      std::mt19937 rng(static_cast<std::uint32_t>(i));
      for (auto& b : p) b = static_cast<std::uint8_t>(rng());
      break;
    }
    case 2: {
      std::string text = "escdr pattern page " + std::to_string(i) + " static content; ";
      for (std::size_t k = 0; k < kPageSize; ++k)
        p[k] = static_cast<std::uint8_t>(text[k % text.size()]);
      break;
    }
    case 3:
      p[kPageSize - 1] = static_cast<std::uint8_t>(i);
      break;
    default:
      break;  // a zero page between non-zero ones
  }
  return p;
}

void WritePatterns(std::uint8_t* ram) {
  for (int i = 0; i < kPatternPages; ++i) {
    std::vector<std::uint8_t> p = PatternPage(i);
    std::memcpy(ram + kPatternStart + static_cast<std::uint64_t>(i) * kPageSize, p.data(),
                kPageSize);
  }
}

// QEMU's own block list: HMP "info ramblock" (name and used length).
Result<std::vector<RamBlockInfo>> QemuRamBlocks(QmpClient& qmp) {
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json out,
                         qmp.Execute("human-monitor-command", {{"command-line", "info ramblock"}}));
  if (!out.is_string()) return Err(Status::ProtocolError("info ramblock: not a string"));
  std::vector<RamBlockInfo> blocks;
  std::istringstream lines(out.get<std::string>());
  std::string line;
  std::getline(lines, line);  // header
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string name, psize, unit, offset, used;
    if (!(f >> name >> psize >> unit >> offset >> used)) continue;
    blocks.push_back({name, std::stoull(used, nullptr, 16)});
  }
  return blocks;
}

// Counts records and rebuilds "mem0" into its own buffer.
class CheckingVisitor : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t> b) override {
    stream.insert(stream.end(), b.begin(), b.end());
    return Status::OK();
  }
  Status OnBlockList(const std::vector<RamBlockInfo>& b) override {
    blocks = b;
    for (std::size_t i = 0; i < b.size(); ++i) {
      if (b[i].name == "mem0") {
        mem0_index = static_cast<int>(i);
        mem0.assign(b[i].length, 0);
      }
    }
    return Status::OK();
  }
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    ++pages;
    stream.insert(stream.end(), data, data + kPageSize);
    if (static_cast<int>(block) == mem0_index) std::memcpy(mem0.data() + offset, data, kPageSize);
    return Status::OK();
  }
  Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) override {
    ++zeros;
    if (static_cast<int>(block) == mem0_index) std::memset(mem0.data() + offset, fill, kPageSize);
    return Status::OK();
  }

  std::vector<std::uint8_t> stream;
  std::vector<RamBlockInfo> blocks;
  std::vector<std::uint8_t> mem0;
  int mem0_index = -1;
  std::uint64_t pages = 0;
  std::uint64_t zeros = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(StreamImageITest, SavedStreamRebuildsTheGuestRamExactly) {
  auto qemu = BareQemu::Start("pc");
  ASSERT_TRUE(qemu.has_value()) << qemu.error().ToString();
  BareQemu& q = **qemu;
  RamMapping ram(q.ram_path());
  ASSERT_NE(ram.data(), nullptr) << "cannot map " << q.ram_path();
  WritePatterns(ram.data());
  ASSERT_OK(Stop(q.qmp()));
  auto qemu_blocks = QemuRamBlocks(q.qmp());
  ASSERT_TRUE(qemu_blocks.has_value()) << qemu_blocks.error().ToString();

  std::string path = q.File("vm.mig");
  auto info = q.SaveStream(path);
  ASSERT_TRUE(info.has_value()) << info.error().ToString() << "\n" << q.Log();

  auto image = LoadMigrationStream(path);
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  const MemoryImage& m = **image;
  // The block list is QEMU's, in its order, and sums to what it migrated.
  EXPECT_EQ(m.blocks(), *qemu_blocks);
  EXPECT_EQ(m.TotalBytes(), info->ram_total);
  int mem0 = m.FindBlock("mem0");
  ASSERT_EQ(mem0, 0);
  ASSERT_EQ(m.blocks()[0].length, kRamBytes);

  // mem0 equals the (stopped) guest's RAM file byte for byte.
  const std::uint8_t* rebuilt = m.BlockData(0);
  for (std::uint64_t off = 0; off < kRamBytes; off += kPageSize) {
    ASSERT_EQ(std::memcmp(rebuilt + off, ram.data() + off, kPageSize), 0)
        << "mem0 page at 0x" << std::hex << off << " differs from the RAM file";
  }
  // ...including the patterns written from here (not just SeaBIOS's zeros).
  for (int i = 0; i < kPatternPages; ++i) {
    ASSERT_EQ(std::memcmp(rebuilt + kPatternStart + static_cast<std::uint64_t>(i) * kPageSize,
                          PatternPage(i).data(), kPageSize),
              0)
        << "pattern page " << i;
  }
  // pc.bios holds SeaBIOS's image, as loaded from disk.
  std::string bios = ReadFile("/usr/share/seabios/bios-256k.bin");
  int bios_block = m.FindBlock("pc.bios");
  ASSERT_GE(bios_block, 0);
  if (bios.size() == m.blocks()[static_cast<std::size_t>(bios_block)].length) {
    EXPECT_EQ(
        std::memcmp(m.BlockData(static_cast<std::size_t>(bios_block)), bios.data(), bios.size()),
        0);
  }

  // The parser's record counts are QEMU's: "normal" = PAGE, "duplicate" = ZERO.
  CheckingVisitor v;
  ASSERT_OK(ParseStreamFile(path, &v));
  EXPECT_EQ(v.pages, info->ram_normal);
  EXPECT_EQ(v.zeros, info->ram_duplicate);
  std::string saved = ReadFile(path);
  EXPECT_EQ(v.stream, std::vector<std::uint8_t>(saved.begin(), saved.end()));

  // OpenImage picks the stream by its magic, and the RAM file otherwise.
  auto by_magic = OpenImage(path);
  ASSERT_TRUE(by_magic.has_value()) << by_magic.error().ToString();
  EXPECT_EQ((*by_magic)->blocks().size(), qemu_blocks->size());
  auto raw = OpenImage(q.ram_path());
  ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
  EXPECT_EQ(std::memcmp(raw.value()->BlockData(0), rebuilt, kRamBytes), 0);
}

TEST(StreamImageITest, SocketStreamParsedAsItArrivesInOddChunks) {
  // q35 with -uuid and validate-uuid: the configuration carries a subsection.
  auto qemu = BareQemu::Start("q35", {"-uuid", "12345678-9abc-def0-1234-56789abcdef0"});
  ASSERT_TRUE(qemu.has_value()) << qemu.error().ToString();
  BareQemu& q = **qemu;
  RamMapping ram(q.ram_path());
  ASSERT_NE(ram.data(), nullptr);
  WritePatterns(ram.data());
  ASSERT_OK(Stop(q.qmp()));
  ASSERT_OK(SetMigrationCapabilities(q.qmp(), {{"validate-uuid", true}}));

  std::string sock = q.File("mig.sock");
  auto listener = ListenUnix(sock);
  ASSERT_TRUE(listener.has_value()) << listener.error().ToString();
  ASSERT_OK(Migrate(q.qmp(), "unix:" + sock));
  auto conn = AcceptUnix(listener->get(), 60s);
  ASSERT_TRUE(conn.has_value()) << conn.error().ToString();

  CheckingVisitor v;
  StreamParser parser(&v);
  std::vector<std::uint8_t> received;
  std::vector<std::uint8_t> buf(4093);  // odd: records straddle reads
  for (;;) {
    ssize_t n = ::recv(conn->get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GE(n, 0) << std::strerror(errno);
    if (n == 0) break;
    received.insert(received.end(), buf.begin(), buf.begin() + n);
    ASSERT_OK(parser.Feed({buf.data(), static_cast<std::size_t>(n)}));
  }
  ASSERT_OK(parser.Finish());
  auto info = WaitForMigration(q.qmp(), 60s);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();

  EXPECT_TRUE(parser.ram_complete());
  EXPECT_EQ(v.stream, received);
  EXPECT_EQ(v.pages, info->ram_normal);
  EXPECT_EQ(v.zeros, info->ram_duplicate);
  ASSERT_EQ(v.mem0.size(), kRamBytes);
  EXPECT_EQ(std::memcmp(v.mem0.data(), ram.data(), kRamBytes), 0);
  EXPECT_GT(parser.stats().tail_bytes, 0u);
}

// Saves a stream from a fresh guest with `capability` on, and returns what
// LoadMigrationStream makes of it. (QEMU 7.2 cannot migrate a source again
// once it is in postmigrate, so each capability needs its own guest.)
Result<std::unique_ptr<MemoryImage>> LoadStreamSavedWith(const std::string& capability) {
  ESCDR_ASSIGN_OR_RETURN(auto qemu, BareQemu::Start("pc"));
  RamMapping ram(qemu->ram_path());
  if (ram.data() == nullptr) return Err(Status::IOError("cannot map " + qemu->ram_path()));
  WritePatterns(ram.data());
  ESCDR_RETURN_IF_ERROR(Stop(qemu->qmp()));
  ESCDR_RETURN_IF_ERROR(SetMigrationCapabilities(qemu->qmp(), {{capability, true}}));
  std::string path = qemu->File(capability + ".mig");
  ESCDR_ASSIGN_OR_RETURN(MigrationInfo info, qemu->SaveStream(path));
  (void)info;
  auto image = LoadMigrationStream(path);
  if (image.has_value()) return image;
  return Err(image.error());
}

TEST(StreamImageITest, XIgnoreSharedStreamIsRefused) {
  auto image = LoadStreamSavedWith("x-ignore-shared");
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotSupported) << image.error().ToString();
  EXPECT_THAT(image.error().message(), HasSubstr("capability x-ignore-shared"));
}

TEST(StreamImageITest, CompressedStreamIsRefused) {
  auto image = LoadStreamSavedWith("compress");
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().code(), StatusCode::kNotSupported) << image.error().ToString();
  EXPECT_THAT(image.error().message(), HasSubstr("capability compress"));
}

}  // namespace
}  // namespace escdr
