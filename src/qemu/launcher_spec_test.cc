#include "escdr/qemu/launch_spec.h"

#include <algorithm>
#include <string>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

NicSpec Nic(std::string mode, std::string mac = "", std::vector<PortForward> forwards = {}) {
  NicSpec n;
  n.mode = std::move(mode);
  n.mac = std::move(mac);
  n.forwards = std::move(forwards);
  return n;
}

class LaunchSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("escdr-spec");
    ASSERT_TRUE(d.has_value());
    dir_ = std::move(*d);
    ASSERT_TRUE(WriteStringToFile(dir_.File("vmlinuz"), "kernel").ok());
    ASSERT_TRUE(WriteStringToFile(dir_.File("initrd.img"), "initrd").ok());
    spec_.name = "vm1";
    spec_.memory_mib = 512;
    spec_.vcpus = 2;
    spec_.kernel = dir_.File("vmlinuz");
    spec_.initrd = dir_.File("initrd.img");
    spec_.append = "console=ttyS0 nokaslr";
    spec_.ram_path = dir_.File("ram");
    spec_.qmp_socket = dir_.File("qmp.sock");
    spec_.serial_log = dir_.File("serial.log");
  }
  // The value following `flag` in argv, or "" if absent.
  static std::string After(const std::vector<std::string>& argv, const std::string& flag) {
    auto it = std::find(argv.begin(), argv.end(), flag);
    return it == argv.end() || it + 1 == argv.end() ? "" : *(it + 1);
  }
  static bool Has(const std::vector<std::string>& argv, const std::string& arg) {
    return std::find(argv.begin(), argv.end(), arg) != argv.end();
  }
  TempDir dir_;
  LaunchSpec spec_;
};

TEST_F(LaunchSpecTest, ValidSpecPasses) { EXPECT_TRUE(ValidateLaunchSpec(spec_).ok()); }

TEST_F(LaunchSpecTest, EachBadFieldIsRejectedWithItsName) {
  struct Case {
    std::function<void(LaunchSpec&)> mutate;
    std::string expected;
  };
  std::vector<Case> cases = {
      {[](LaunchSpec& s) { s.name = ""; }, "no name"},
      {[](LaunchSpec& s) { s.memory_mib = 0; }, "memory_mib 0"},
      {[](LaunchSpec& s) { s.vcpus = 0; }, "vcpus 0"},
      {[](LaunchSpec& s) { s.machine = ""; }, "machine"},
      {[](LaunchSpec& s) { s.kernel = ""; }, "neither a kernel nor a disk"},
      {[](LaunchSpec& s) { s.disks = {{"/nonexistent/disk.img", "raw", false}}; }, "disk /nonexistent/disk.img"},
      {[](LaunchSpec& s) { s.nics = {Nic("bridge")}; }, "NIC mode 'bridge'"},
      {[](LaunchSpec& s) { s.nics = {Nic("tap")}; }, "tap NIC needs an interface"},
      {[](LaunchSpec& s) { s.nics = {Nic("user", "52:54")}; }, "MAC '52:54'"},
      {[](LaunchSpec& s) { s.nics = {Nic("user", "", {{80, 0}, {80, 1}})}; },
       "guest port 80"},
      {[](LaunchSpec& s) { s.nics = {Nic("user"), Nic("user")}; }, "2 NICs"},
      {[](LaunchSpec& s) { s.firmware = "coreboot"; }, "firmware 'coreboot'"},
      {[](LaunchSpec& s) { s.firmware = "uefi"; }, "firmware_code"},
      {[](LaunchSpec& s) { s.kernel = "/nonexistent/vmlinuz"; }, "kernel /nonexistent/vmlinuz"},
      {[](LaunchSpec& s) { s.initrd = "/nonexistent/initrd"; }, "initrd /nonexistent/initrd"},
      {[](LaunchSpec& s) { s.ram_path = ""; }, "ram_path is empty"},
      {[](LaunchSpec& s) { s.ram_path = "/nonexistent-dir/ram"; }, "/nonexistent-dir"},
      {[](LaunchSpec& s) { s.ram_path += ",share=off"; }, "','"},
      {[](LaunchSpec& s) { s.qmp_socket = "/tmp/" + std::string(120, 'q'); }, "qmp_socket"},
      {[](LaunchSpec& s) { s.serial_log = ""; }, "serial_log"},
      {[](LaunchSpec& s) { s.incoming = "sometimes"; }, "incoming 'sometimes'"},
      {[](LaunchSpec& s) { s.incoming = "unix:"; }, "incoming 'unix:'"},
  };
  for (const Case& c : cases) {
    LaunchSpec s = spec_;
    c.mutate(s);
    Status st = ValidateLaunchSpec(s);
    EXPECT_FALSE(st.ok()) << "expected failure for: " << c.expected;
    EXPECT_NE(st.message().find(c.expected), std::string::npos)
        << "message '" << st.message() << "' lacks '" << c.expected << "'";
  }
}

TEST_F(LaunchSpecTest, MissingKernelIsNotFound) {
  spec_.kernel = dir_.File("missing");
  EXPECT_TRUE(ValidateLaunchSpec(spec_).IsNotFound());
}

TEST_F(LaunchSpecTest, IncomingFormsAccepted) {
  for (const char* in : {"", "defer", "unix:/tmp/x.sock", "tcp:127.0.0.1:4444", "exec:cat f"}) {
    spec_.incoming = in;
    EXPECT_TRUE(ValidateLaunchSpec(spec_).ok()) << in;
  }
}

TEST_F(LaunchSpecTest, ArgvUsesTcgSharedFileRamAndNoDefaults) {
  std::vector<std::string> argv = BuildQemuArgv(spec_);
  EXPECT_EQ(argv[0], "qemu-system-x86_64");
  EXPECT_EQ(After(argv, "-accel"), "tcg");
  EXPECT_EQ(After(argv, "-machine"), "pc,memory-backend=mem0");
  // 512 MiB plus the TCG pad (kTcgRamPadBytes), in KiB.
  EXPECT_EQ(After(argv, "-m"), "524296K");
  EXPECT_EQ(GuestRamBytes(spec_), (512ull << 20) + 8192);
  EXPECT_EQ(After(argv, "-smp"), "2");
  EXPECT_EQ(After(argv, "-object"),
            "memory-backend-file,id=mem0,size=524296K,mem-path=" + spec_.ram_path + ",share=on");
  EXPECT_TRUE(Has(argv, "-nodefaults"));
  EXPECT_TRUE(Has(argv, "-nographic"));
  EXPECT_TRUE(Has(argv, "-no-user-config"));
  EXPECT_EQ(After(argv, "-nic"), "none");
  EXPECT_EQ(After(argv, "-serial"), "file:" + spec_.serial_log);
  EXPECT_EQ(After(argv, "-qmp"), "unix:" + spec_.qmp_socket + ",server=on,wait=off");
  EXPECT_EQ(After(argv, "-kernel"), spec_.kernel);
  EXPECT_EQ(After(argv, "-initrd"), spec_.initrd);
  EXPECT_EQ(After(argv, "-append"), "console=ttyS0 nokaslr");
  EXPECT_FALSE(Has(argv, "-S"));
  EXPECT_FALSE(Has(argv, "-incoming"));
}

TEST_F(LaunchSpecTest, ArgvForAPausedIncomingDestinationWithExtras) {
  spec_.incoming = "defer";
  spec_.start_paused = true;
  spec_.initrd = "";
  spec_.append = "";
  spec_.extra_args = {"-rtc", "base=utc"};
  spec_.qemu_binary = "/opt/qemu/bin/qemu-system-x86_64";
  std::vector<std::string> argv = BuildQemuArgv(spec_);
  EXPECT_EQ(argv[0], "/opt/qemu/bin/qemu-system-x86_64");
  EXPECT_EQ(After(argv, "-incoming"), "defer");
  EXPECT_TRUE(Has(argv, "-S"));
  EXPECT_FALSE(Has(argv, "-initrd"));
  EXPECT_FALSE(Has(argv, "-append"));
  ASSERT_GE(argv.size(), 2u);
  EXPECT_EQ(argv[argv.size() - 2], "-rtc");
  EXPECT_EQ(argv.back(), "base=utc");
}

TEST_F(LaunchSpecTest, ArgvOfARealVmHasDisksNicFirmwareAndConsole) {
  ASSERT_TRUE(WriteStringToFile(dir_.File("disk.qcow2"), "disk").ok());
  ASSERT_TRUE(WriteStringToFile(dir_.File("data.img"), "data").ok());
  ASSERT_TRUE(WriteStringToFile(dir_.File("code.fd"), "code").ok());
  ASSERT_TRUE(WriteStringToFile(dir_.File("vars.fd"), "vars").ok());
  spec_.kernel = "";
  spec_.disks = {{dir_.File("disk.qcow2"), "qcow2", false}, {dir_.File("data.img"), "raw", true}};
  spec_.nics = {Nic("user", MacForVm("vm1", 0), {{80, 8080}, {6379, 16379}})};
  spec_.firmware = "uefi";
  spec_.firmware_code = dir_.File("code.fd");
  spec_.firmware_vars = dir_.File("vars.fd");
  spec_.console = true;
  spec_.console_socket = dir_.File("console.sock");
  ASSERT_TRUE(ValidateLaunchSpec(spec_).ok()) << ValidateLaunchSpec(spec_).ToString();
  std::vector<std::string> argv = BuildQemuArgv(spec_);
  // A disk boot: no -kernel, and no -initrd or -append (QEMU refuses them alone).
  EXPECT_FALSE(Has(argv, "-kernel"));
  EXPECT_FALSE(Has(argv, "-initrd"));
  EXPECT_FALSE(Has(argv, "-append"));
  EXPECT_FALSE(Has(argv, "-nic"));
  EXPECT_TRUE(Has(argv, "file=" + spec_.disks[0].path + ",format=qcow2,if=none,id=disk0,readonly=off"));
  EXPECT_TRUE(Has(argv, "file=" + spec_.disks[1].path + ",format=raw,if=none,id=disk1,readonly=on"));
  // Without a kernel the firmware boots the first disk.
  EXPECT_TRUE(Has(argv, "virtio-blk-pci,drive=disk0,id=vd0,bootindex=0"));
  EXPECT_TRUE(Has(argv, "virtio-blk-pci,drive=disk1,id=vd1"));
  EXPECT_EQ(After(argv, "-netdev"),
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:16379-:6379");
  EXPECT_TRUE(Has(argv, "virtio-net-pci,netdev=net0,id=nic0,mac=" + MacForVm("vm1", 0)));
  EXPECT_TRUE(Has(argv, "if=pflash,format=raw,unit=0,readonly=on,file=" + spec_.firmware_code));
  EXPECT_TRUE(Has(argv, "if=pflash,format=raw,unit=1,file=" + spec_.firmware_vars));
  EXPECT_TRUE(Has(argv, "socket,id=console,path=" + spec_.console_socket + ",server=on,wait=off"));
  EXPECT_TRUE(Has(argv, "chardev:console"));
  // The kernel, when given, is booted instead and no disk carries a bootindex.
  spec_.kernel = dir_.File("vmlinuz");
  argv = BuildQemuArgv(spec_);
  EXPECT_EQ(After(argv, "-kernel"), spec_.kernel);
  EXPECT_TRUE(Has(argv, "virtio-blk-pci,drive=disk0,id=vd0"));
}

TEST(MacForVm, StableDistinctAndQemuPrefixed) {
  EXPECT_EQ(MacForVm("web1", 0), MacForVm("web1", 0));
  EXPECT_NE(MacForVm("web1", 0), MacForVm("web2", 0));
  EXPECT_NE(MacForVm("web1", 0), MacForVm("web1", 1));
  EXPECT_EQ(MacForVm("web1", 0).substr(0, 9), "52:54:00:");
  EXPECT_EQ(MacForVm("web1", 0).size(), 17u);
}

TEST(ResolveHostPorts, GivesFreePortsOnlyWhereZero) {
  LaunchSpec s;
  s.nics = {Nic("user", "", {{80, 0}, {22, 2222}, {6379, 0}})};
  ASSERT_TRUE(ResolveHostPorts(&s).ok());
  EXPECT_NE(s.nics[0].forwards[0].host_port, 0);
  EXPECT_EQ(s.nics[0].forwards[1].host_port, 2222);
  EXPECT_NE(s.nics[0].forwards[2].host_port, 0);
  EXPECT_NE(s.nics[0].forwards[0].host_port, s.nics[0].forwards[2].host_port);
}

TEST(ForwardedPorts, EveryNicsForwardsGuestToHost) {
  LaunchSpec s;
  EXPECT_TRUE(ForwardedPorts(s).empty());
  s.nics = {Nic("user", "", {{80, 0}, {22, 2222}}), Nic("user", "", {{6379, 6380}})};
  const std::map<std::uint16_t, std::uint16_t> want = {{22, 2222}, {80, 0}, {6379, 6380}};
  EXPECT_EQ(ForwardedPorts(s), want);
}

TEST_F(LaunchSpecTest, JsonRoundTripKeepsEveryField) {
  spec_.disks = {{"/srv/vm1.qcow2", "qcow2", false}};
  spec_.nics = {Nic("user", "52:54:00:01:02:03", {{80, 0}})};
  spec_.firmware = "uefi";
  spec_.firmware_code = "/usr/share/OVMF/OVMF_CODE_4M.fd";
  spec_.firmware_vars = "/srv/vm1.vars.fd";
  spec_.console = true;
  spec_.console_socket = "/run/escdr/vm1.console";
  spec_.incoming = "defer";
  spec_.start_paused = true;
  spec_.extra_args = {"-rtc", "base=utc"};
  spec_.machine = "pc-i440fx-7.2";
  nlohmann::json j = LaunchSpecToJson(spec_);
  EXPECT_EQ(j["memory_mib"], 512);
  EXPECT_EQ(j["ram_path"], spec_.ram_path);
  auto back = LaunchSpecFromJson(nlohmann::json::parse(j.dump()));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, spec_);
}

TEST_F(LaunchSpecTest, JsonMissingKeysTakeDefaultsAndUnknownKeysAreIgnored) {
  auto s = LaunchSpecFromJson({{"name", "vm2"}, {"future_field", 1}});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->name, "vm2");
  EXPECT_EQ(s->memory_mib, 256u);
  EXPECT_EQ(s->machine, "pc");
  EXPECT_EQ(s->qemu_binary, "qemu-system-x86_64");
}

TEST_F(LaunchSpecTest, JsonWrongTypesAreInvalidArgumentNamingTheKey) {
  auto s = LaunchSpecFromJson({{"name", "vm"}, {"memory_mib", "lots"}});
  ASSERT_FALSE(s.has_value());
  EXPECT_TRUE(s.error().IsInvalidArgument());
  EXPECT_NE(s.error().message().find("memory_mib"), std::string::npos);
  s = LaunchSpecFromJson({{"vcpus", -1}});
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("vcpus"), std::string::npos);
  s = LaunchSpecFromJson({{"extra_args", "-S"}});
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("extra_args"), std::string::npos);
  EXPECT_FALSE(LaunchSpecFromJson(nlohmann::json::array()).has_value());
}

}  // namespace
}  // namespace escdr
