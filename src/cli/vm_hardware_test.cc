#include "cli/vm_hardware.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"

namespace escdr::cli {
namespace {

TEST(ParseDiskOption, PathFormatAndFlags) {
  auto d = ParseDiskOption("/srv/vm1.qcow2");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->path, "/srv/vm1.qcow2");
  EXPECT_EQ(d->format, "qcow2");
  EXPECT_FALSE(d->read_only);
  d = ParseDiskOption("/srv/base.img,format=raw,bus=virtio,readonly=on");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->format, "raw");
  EXPECT_TRUE(d->read_only);
  d = ParseDiskOption("rel/disk.img");
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(std::filesystem::path(d->path).is_absolute()) << d->path;
}

TEST(ParseDiskOption, RefusesUnknownParts) {
  for (const char* bad : {"", ",format=raw", "/a,format=vmdk", "/a,bus=ide", "/a,cache=none",
                          "/a,readonly=yes"}) {
    auto d = ParseDiskOption(bad);
    ASSERT_FALSE(d.has_value()) << bad;
    EXPECT_EQ(d.error().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(d.error().message().find("--disk"), std::string::npos) << d.error().message();
  }
}

TEST(ParseNicOption, Modes) {
  auto n = ParseNicOption("none");
  ASSERT_TRUE(n.has_value());
  EXPECT_FALSE(n->has_value());
  n = ParseNicOption("user");
  ASSERT_TRUE(n.has_value() && n->has_value());
  EXPECT_EQ((*n)->mode, "user");
  n = ParseNicOption("tap:tap7");
  ASSERT_TRUE(n.has_value() && n->has_value());
  EXPECT_EQ((*n)->mode, "tap");
  EXPECT_EQ((*n)->tap, "tap7");
  for (const char* bad : {"", "tap:", "bridge", "tap:a,b"}) {
    EXPECT_FALSE(ParseNicOption(bad).has_value()) << bad;
  }
}

TEST(ParseForward, GuestAndHostPorts) {
  auto f = ParseForward("80");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->guest_port, 80);
  EXPECT_EQ(f->host_port, 0);
  f = ParseForward("6379:16379");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->guest_port, 6379);
  EXPECT_EQ(f->host_port, 16379);
  for (const char* bad : {"", "0", "65536", "80:", "80:x", "a:1", "1:2:3", "-1"}) {
    EXPECT_FALSE(ParseForward(bad).has_value()) << bad;
  }
}

TEST(CreateOverlay, MakesAQcow2OnTheBaseAndNeverReusesOne) {
  if (!FindProgram("qemu-img").has_value()) GTEST_SKIP() << "qemu-img is not installed";
  auto dir = TempDir::Create("escdr-overlay-");
  ASSERT_TRUE(dir.has_value());
  const std::string base = dir->path() + "/base.img";
  std::ofstream(base) << std::string(1 << 20, 'x');
  auto d = CreateOverlay(base, dir->path() + "/disks", "vm1");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->format, "qcow2");
  EXPECT_EQ(d->path, dir->path() + "/disks/vm1.qcow2");
  char magic[4] = {};
  std::ifstream(d->path).read(magic, 4);
  EXPECT_EQ(std::string(magic, 4), std::string("QFI\xfb", 4));
  auto again = CreateOverlay(base, dir->path() + "/disks", "vm1");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kAlreadyExists);
  auto missing = CreateOverlay(dir->path() + "/nope.img", dir->path() + "/disks", "vm2");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
}

TEST(CreateUefiVars, CopiesTheTemplateOnce) {
  auto dir = TempDir::Create("escdr-vars-");
  ASSERT_TRUE(dir.has_value());
  const std::string templ = dir->path() + "/VARS.fd";
  std::ofstream(templ) << "vars";
  auto v = CreateUefiVars(templ, dir->path(), "vm1");
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  std::string content;
  std::ifstream(*v) >> content;
  EXPECT_EQ(content, "vars");
  EXPECT_FALSE(CreateUefiVars(templ, dir->path(), "vm1").has_value());
}

}  // namespace
}  // namespace escdr::cli
