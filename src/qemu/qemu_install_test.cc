#include "escdr/qemu/qemu_install.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"

namespace escdr {
namespace {

// What Debian 12's QEMU prints for `-machine help` (abridged).
constexpr std::string_view kMachineHelp72 =
    "Supported machines are:\n"
    "microvm              microvm (i386)\n"
    "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n"
    "pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\n"
    "pc-i440fx-7.1        Standard PC (i440FX + PIIX, 1996)\n"
    "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n"
    "pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n"
    "none                 empty machine\n";

TEST(QemuInstallTest, ParsesVersionOutput) {
  auto v = ParseQemuVersionOutput(
      "QEMU emulator version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)\n"
      "Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n");
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(*v, "10.0.13");
  EXPECT_FALSE(ParseQemuVersionOutput("qemu-system-x86_64: unknown option").has_value());
  EXPECT_FALSE(ParseQemuVersionOutput("QEMU emulator version x").has_value());
}

TEST(QemuInstallTest, ParsesMachineHelpIntoNamesAndAliases) {
  QemuInstall q;
  q.version = "7.2.19";
  ParseQemuMachineHelp(kMachineHelp72, &q.machines, &q.aliases);
  EXPECT_EQ(q.machines, (std::vector<std::string>{"microvm", "none", "pc-i440fx-7.1",
                                                  "pc-i440fx-7.2", "pc-q35-7.2"}));
  EXPECT_EQ(q.aliases.at("pc"), "pc-i440fx-7.2");
  EXPECT_EQ(q.aliases.at("q35"), "pc-q35-7.2");
  EXPECT_EQ(*q.CanonicalMachine("pc"), "pc-i440fx-7.2");
  EXPECT_EQ(*q.CanonicalMachine("pc-i440fx-7.1"), "pc-i440fx-7.1");
  auto missing = q.CanonicalMachine("pc-i440fx-10.0");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.error().message().find("pc-i440fx-10.0"), std::string::npos);
}

TEST(QemuInstallTest, UseQemuInstallResolvesTheAliasAndSetsTheCommand) {
  QemuInstall q;
  q.path = "/var/lib/escdr/qemu-10.0";
  q.version = "10.0.13";
  q.command = {"/t/lib64/ld-linux-x86-64.so.2", "--library-path", "/t/lib", "/t/qemu"};
  q.env = {{"QEMU_MODULE_DIR", "/t/mod"}};
  q.machines = {"pc-i440fx-10.0", "pc-i440fx-7.2"};
  q.aliases = {{"pc", "pc-i440fx-10.0"}};
  LaunchSpec spec;
  spec.machine = "pc";
  ASSERT_TRUE(UseQemuInstall(q, &spec).ok());
  EXPECT_EQ(spec.machine, "pc-i440fx-10.0");
  EXPECT_EQ(spec.qemu_version, "10.0");
  EXPECT_EQ(spec.qemu_env, std::vector<std::string>{"QEMU_MODULE_DIR=/t/mod"});
  EXPECT_EQ(BuildQemuArgv(spec).at(3), "/t/qemu");
  EXPECT_EQ(BuildQemuArgv(spec).at(4), "-name");
  // A VM started as 7.2's pc keeps its machine type on 10.0.
  spec.machine = "pc-i440fx-7.2";
  ASSERT_TRUE(UseQemuInstall(q, &spec).ok());
  EXPECT_EQ(spec.machine, "pc-i440fx-7.2");
  spec.machine = "pc-i440fx-6.0";
  EXPECT_EQ(UseQemuInstall(q, &spec).code(), StatusCode::kNotFound);
}

TEST(QemuInstallTest, FindQemuSeriesNamesWhatTheHostHas) {
  QemuInstall a, b;
  a.version = "7.2.19";
  b.version = "10.0.13";
  std::vector<QemuInstall> both = {a, b};
  ASSERT_TRUE(FindQemuSeries(both, "10.0").has_value());
  EXPECT_EQ((*FindQemuSeries(both, "7.2"))->version, "7.2.19");
  auto none = FindQemuSeries({a}, "10.0");
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().message().find("10.0"), std::string::npos);
  EXPECT_NE(none.error().message().find("7.2.19"), std::string::npos);
}

TEST(QemuInstallTest, ProbeRefusesWhatIsNotAQemu) {
  auto tmp = TempDir::Create("escdr-qemu-probe");
  ASSERT_TRUE(tmp.has_value());
  auto dir = ProbeQemuInstall(tmp->path());  // a directory without a QEMU tree
  ASSERT_FALSE(dir.has_value());
  EXPECT_EQ(dir.error().code(), StatusCode::kNotFound);
  EXPECT_NE(dir.error().message().find("tools/install-qemu.sh"), std::string::npos);
  auto prog = ProbeQemuInstall("/bin/true");  // runs, prints no version
  ASSERT_FALSE(prog.has_value());
  EXPECT_NE(prog.error().message().find("/bin/true"), std::string::npos);
}

// The real QEMUs of this machine: the host's, and the 10.0 tree if installed.
TEST(QemuInstallTest, ProbesTheHostQemu) {
  auto q = ProbeQemuInstall("qemu-system-x86_64");
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_EQ(q->Series(), "7.2");
  auto pc = q->CanonicalMachine("pc");
  ASSERT_TRUE(pc.has_value());
  EXPECT_EQ(*pc, "pc-i440fx-7.2");
}

TEST(QemuInstallTest, ProbesTheQemu10Tree) {
  const char* env = std::getenv("ESCDR_QEMU10_DIR");
  const std::string dir = env && *env ? env : "/var/lib/escdr/qemu-10.0";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << dir << " absent (tools/install-qemu.sh)";
  auto q = ProbeQemuInstall(dir);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_EQ(q->Series(), "10.0");
  EXPECT_EQ(*q->CanonicalMachine("pc"), "pc-i440fx-10.0");
  // It can run VMs started on 7.2 (upgrade migrations).
  EXPECT_EQ(*q->CanonicalMachine("pc-i440fx-7.2"), "pc-i440fx-7.2");
}

TEST(QemuInstallTest, DefaultPathsAreTheHostQemuThenTheInstalledTrees) {
  const std::vector<std::string> paths = DefaultQemuPaths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), "qemu-system-x86_64");
  const std::string tree = std::string(kQemuTreeRoot) + "/qemu-10.0";
  const bool installed = std::filesystem::exists(tree + "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(std::find(paths.begin(), paths.end(), tree) != paths.end(), installed);
  for (const std::string& p : paths) EXPECT_EQ(p.find(".partial"), std::string::npos) << p;
}

}  // namespace
}  // namespace escdr
