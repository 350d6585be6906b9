#include "escdr/libvirt/libvirt_host.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "libvirt/libvirt_names.h"

namespace escdr::libvirt {
namespace {

using ::testing::HasSubstr;

// What `virsh dumpxml` gives for a running TCG domain defined with libosinfo
// metadata (libvirt 9.0, Debian 12).
constexpr const char* kRunningDebianXml = R"(<domain type='qemu' id='1'>
  <name>web-1</name>
  <uuid>5f0c7a4e-1d6b-4c4e-9a53-2a1d3f0e9b11</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/var/lib/escdr/guest/vmlinuz</kernel>
    <initrd>/var/lib/escdr/guest/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet nokaslr</cmdline>
    <boot dev='hd'/>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='pci' index='0' model='pci-root'>
      <alias name='pci.0'/>
    </controller>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/web-1-serial.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none' model='none'/>
</domain>
)";

// A defined, shut-off domain without libosinfo metadata, memory in GiB,
// indented element text.
constexpr const char* kPlainXml = R"(<domain type="kvm">
  <name>
    db
  </name>
  <memory unit="GiB">2</memory>
  <vcpu>4</vcpu>
  <os><type machine="q35">hvm</type></os>
  <devices><emulator>/opt/qemu/bin/qemu-system-x86_64</emulator></devices>
</domain>
)";

TEST(ParseLibosinfoIdTest, TakesTheLastTwoPathComponents) {
  Result<OsRelease> r = ParseLibosinfoId("http://debian.org/debian/12");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->os, "debian");
  EXPECT_EQ(r->version, "12");

  r = ParseLibosinfoId("http://ubuntu.com/ubuntu/22.04");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->os, "ubuntu");
  EXPECT_EQ(r->version, "22.04");

  r = ParseLibosinfoId("https://centos.org/centos-stream/9");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->os, "centos-stream");
  EXPECT_EQ(r->version, "9");

  r = ParseLibosinfoId("http://example.org/a/b/win/10");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->os, "win");
  EXPECT_EQ(r->version, "10");
}

TEST(ParseLibosinfoIdTest, RejectsWhatIsNotAnOsId) {
  for (const char* bad :
       {"", "debian/12", "ftp://debian.org/debian/12", "http://debian.org/12",
        "http://debian.org/debian/", "http://debian.org//12", "http://", "http:///debian/12"}) {
    Result<OsRelease> r = ParseLibosinfoId(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.error().message(), HasSubstr("libosinfo id")) << bad;
  }
}

TEST(ParseDomainXmlTest, ReadsARunningDomainWithLibosinfoMetadata) {
  Result<DomainInfo> r = ParseDomainXml(kRunningDebianXml);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->name, "web-1");
  EXPECT_EQ(r->uuid, "5f0c7a4e-1d6b-4c4e-9a53-2a1d3f0e9b11");
  EXPECT_EQ(r->memory_kib, 262144u);
  EXPECT_EQ(r->vcpus, 2u);
  EXPECT_EQ(r->machine, "pc-i440fx-7.2");
  EXPECT_EQ(r->emulator, "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(r->os_id, "http://debian.org/debian/12");
  // Not in the XML: left for LibvirtHost to fill.
  EXPECT_EQ(r->state, "");
  EXPECT_EQ(r->pid, 0);
}

TEST(ParseDomainXmlTest, ReadsADomainWithoutMetadata) {
  Result<DomainInfo> r = ParseDomainXml(kPlainXml);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->name, "db");
  EXPECT_EQ(r->uuid, "");
  EXPECT_EQ(r->memory_kib, 2u * 1024 * 1024);
  EXPECT_EQ(r->vcpus, 4u);
  EXPECT_EQ(r->machine, "q35");
  EXPECT_EQ(r->emulator, "/opt/qemu/bin/qemu-system-x86_64");
  EXPECT_EQ(r->os_id, "");
}

TEST(ParseDomainXmlTest, MemoryWithoutUnitIsKiB) {
  Result<DomainInfo> r = ParseDomainXml("<domain><name>m</name><memory>1048576</memory></domain>");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->memory_kib, 1048576u);
  EXPECT_EQ(r->vcpus, 0u);
  EXPECT_EQ(r->machine, "");
}

TEST(ParseDomainXmlTest, MetadataInAnotherNamespaceIsNotAnOsId) {
  Result<DomainInfo> r = ParseDomainXml(
      "<domain><name>x</name><metadata><os xmlns='urn:other' id='http://debian.org/debian/12'/>"
      "</metadata></domain>");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->os_id, "");
}

TEST(ParseDomainXmlTest, RejectsMalformedXml) {
  for (const char* bad : {"", "<domain><name>x</name>", "<domain><name>x</domain>", "not xml",
                          "<domain><name>x</name></domain><extra/>"}) {
    Result<DomainInfo> r = ParseDomainXml(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kProtocolError) << bad;
    EXPECT_THAT(r.error().message(), HasSubstr("domain XML does not parse")) << bad;
  }
}

TEST(ParseDomainXmlTest, RejectsADomainWithoutName) {
  Result<DomainInfo> r = ParseDomainXml("<domain type='qemu'><memory>1</memory></domain>");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  EXPECT_THAT(r.error().message(), HasSubstr("no <domain><name>"));
}

TEST(ParseDomainXmlTest, RejectsBadNumbers) {
  for (const char* bad :
       {"<domain><name>x</name><memory unit='KiB'>lots</memory></domain>",
        "<domain><name>x</name><memory unit='parsecs'>1</memory></domain>",
        "<domain><name>x</name><memory unit='TiB'>99999999999999999</memory></domain>",
        "<domain><name>x</name><vcpu>-1</vcpu></domain>"}) {
    Result<DomainInfo> r = ParseDomainXml(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kProtocolError) << bad;
  }
}

TEST(LibvirtNamesTest, NamesStatesReasonsAndEvents) {
  EXPECT_EQ(DomainStateName(1), "running");
  EXPECT_EQ(DomainStateName(5), "shutoff");
  EXPECT_EQ(DomainStateName(99), "");
  EXPECT_EQ(DomainStateReasonName(1, 1), "booted");
  EXPECT_EQ(DomainStateReasonName(1, 2), "migrated");
  EXPECT_EQ(DomainStateReasonName(3, 1), "user");
  EXPECT_EQ(DomainStateReasonName(3, 2), "migration");
  EXPECT_EQ(DomainStateReasonName(5, 4), "migrated");
  EXPECT_EQ(DomainStateReasonName(5, 99), "");
  EXPECT_EQ(LifecycleEventName(2), "started");
  EXPECT_EQ(LifecycleEventName(5), "stopped");
  EXPECT_EQ(LifecycleDetailName(2, 1), "migrated");
  EXPECT_EQ(LifecycleDetailName(3, 0), "paused");
  EXPECT_EQ(LifecycleDetailName(4, 0), "unpaused");
  EXPECT_EQ(LifecycleDetailName(5, 1), "destroyed");
  EXPECT_EQ(LifecycleDetailName(5, 3), "migrated");
  EXPECT_EQ(LifecycleDetailName(42, 0), "");
}

}  // namespace
}  // namespace escdr::libvirt
