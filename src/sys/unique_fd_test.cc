#include "escdr/sys/unique_fd.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unix_socket.h"

namespace escdr {
namespace {

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

std::pair<UniqueFd, UniqueFd> Pair() {
  auto p = UnixSocketPair();
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return std::move(*p);
}

TEST(UniqueFdTest, ClosesOnDestruction) {
  int raw;
  {
    auto [a, b] = Pair();
    raw = a.get();
    ASSERT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFdTest, MoveTransfersOwnershipAndReleaseKeepsOpen) {
  auto [a, b] = Pair();
  int raw = a.get();
  UniqueFd moved(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checks the moved-from state
  EXPECT_EQ(moved.get(), raw);
  UniqueFd assigned;
  assigned = std::move(moved);
  EXPECT_EQ(assigned.get(), raw);
  EXPECT_TRUE(IsOpen(raw));
  int released = assigned.Release();
  EXPECT_FALSE(assigned.valid());
  EXPECT_TRUE(IsOpen(released));
  ::close(released);
}

TEST(UniqueFdTest, ResetClosesThePreviousDescriptor) {
  auto [a, b] = Pair();
  auto [c, d] = Pair();
  int old = a.get();
  a.Reset(c.Release());
  EXPECT_FALSE(IsOpen(old));
  EXPECT_TRUE(a.valid());
}

TEST(ReadFullTest, CollectsBytesWrittenInSmallPieces) {
  auto [r, w] = Pair();
  std::vector<std::uint8_t> sent(100000);
  std::iota(sent.begin(), sent.end(), 0);
  std::thread writer([&, fd = w.get()] {
    for (std::size_t i = 0; i < sent.size(); i += 777) {
      std::size_t n = std::min<std::size_t>(777, sent.size() - i);
      ASSERT_EQ(::write(fd, sent.data() + i, n), static_cast<ssize_t>(n));
    }
  });
  std::vector<std::uint8_t> got(sent.size());
  auto n = ReadFull(r.get(), got.data(), got.size());
  writer.join();
  ASSERT_TRUE(n.has_value()) << n.error().ToString();
  EXPECT_EQ(*n, sent.size());
  EXPECT_EQ(got, sent);
}

TEST(ReadFullTest, ReturnsShortCountAtEndOfFile) {
  auto [r, w] = Pair();
  ASSERT_TRUE(WriteFull(w.get(), "abc").ok());
  w.Reset();
  char buf[10];
  auto n = ReadFull(r.get(), buf, sizeof(buf));
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
}

TEST(ReadFullTest, BadDescriptorIsAnErrorNamingWhat) {
  char buf[4];
  auto n = ReadFull(-1, buf, sizeof(buf), "QMP socket");
  ASSERT_FALSE(n.has_value());
  EXPECT_NE(n.error().message().find("QMP socket"), std::string::npos);
}

TEST(WriteFullTest, ClosedPeerIsAnIOErrorNotASignal) {
  auto [a, b] = Pair();
  b.Reset();
  Status s = WriteFull(a.get(), std::string(1 << 20, 'x'), "peer");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_NE(s.message().find("peer"), std::string::npos);
}

TEST(WriteFullTest, NonBlockingDescriptorWaitsForASlowReader) {
  auto [r, w] = Pair();
  ASSERT_TRUE(SetNonBlocking(w.get(), true).ok());
  std::string data(8 << 20, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  std::string got(data.size(), '\0');
  std::thread reader([&] {
    auto n = ReadFull(r.get(), got.data(), got.size());
    ASSERT_TRUE(n.has_value());
    EXPECT_EQ(*n, data.size());
  });
  EXPECT_TRUE(WriteFull(w.get(), data).ok());
  reader.join();
  EXPECT_TRUE(got == data);
}

TEST(WriteFullTest, WorksOnPipesAndFiles) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_TRUE(WriteFull(w.get(), "pipe data").ok());
  char buf[9];
  auto n = ReadFull(r.get(), buf, sizeof(buf));
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(std::string(buf, *n), "pipe data");
}

TEST(WaitReadableTest, TimesOutThenSeesData) {
  auto [r, w] = Pair();
  auto ready = WaitReadable(r.get(), std::chrono::milliseconds(10));
  ASSERT_TRUE(ready.has_value());
  EXPECT_FALSE(*ready);
  ASSERT_TRUE(WriteFull(w.get(), "x").ok());
  ready = WaitReadable(r.get(), std::chrono::seconds(10));
  ASSERT_TRUE(ready.has_value());
  EXPECT_TRUE(*ready);
}

TEST(FileTest, WriteThenReadRoundTrip) {
  auto dir = TempDir::Create("escdr-fd-test");
  ASSERT_TRUE(dir.has_value());
  std::string content(200000, 'q');
  content += "end";
  ASSERT_TRUE(WriteStringToFile(dir->File("f"), content).ok());
  auto back = ReadFileToString(dir->File("f"));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, content);
}

TEST(FileTest, MissingFileIsNotFound) {
  auto back = ReadFileToString("/nonexistent/escdr/file");
  ASSERT_FALSE(back.has_value());
  EXPECT_TRUE(back.error().IsNotFound());
  EXPECT_NE(back.error().message().find("/nonexistent/escdr/file"), std::string::npos);
}

TEST(FileTest, OpenedDescriptorsAreCloseOnExec) {
  auto fd = OpenFile("/dev/null", O_RDONLY);
  ASSERT_TRUE(fd.has_value());
  EXPECT_TRUE(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC);
}

}  // namespace
}  // namespace escdr
