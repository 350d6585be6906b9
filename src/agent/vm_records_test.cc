#include "agent/vm_records.h"

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::agent {
namespace {

VmRecord Sample() {
  VmRecord r;
  r.name = "vm-1";
  r.role = VmRole::kIncoming;
  r.pid = 4242;
  r.kind = {"debian", "12", "qemu", "7.2"};
  r.spec.name = "vm-1";
  r.spec.kernel = "/boot/vmlinuz";
  r.spec.ram_path = "/dev/shm/escdr-h1-vm-1.ram";
  r.spec.qmp_socket = "/tmp/h1/run/vm-1.qmp";
  r.spec.serial_log = "/tmp/h1/logs/vm-1.serial.log";
  r.spec.incoming = "defer";
  r.spec.start_paused = true;
  r.pidfile = "/tmp/h1/run/vm-1.pid";
  r.qemu_log = "/tmp/h1/logs/vm-1.qemu.log";
  r.migration_id = 17;
  return r;
}

TEST(VmRecordsTest, JsonRoundTrip) {
  const VmRecord r = Sample();
  auto back = VmRecordFromJson(VmRecordToJson(r));
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, r);
}

TEST(VmRecordsTest, WriteReadRemove) {
  TempDir dir = TempDir::Create("vm-records").value();
  VmRecord a = Sample();
  VmRecord b = Sample();
  b.name = "vm-2";
  b.role = VmRole::kMigrated;
  ASSERT_TRUE(WriteVmRecord(dir.path(), a).ok());
  ASSERT_TRUE(WriteVmRecord(dir.path(), b).ok());
  a.pid = 99;  // rewriting replaces
  ASSERT_TRUE(WriteVmRecord(dir.path(), a).ok());
  LoadedRecords loaded = ReadVmRecords(dir.path());
  EXPECT_TRUE(loaded.errors.empty());
  ASSERT_EQ(loaded.records.size(), 2u);
  EXPECT_EQ(loaded.records[0], a);
  EXPECT_EQ(loaded.records[1], b);
  ASSERT_TRUE(RemoveVmRecord(dir.path(), "vm-1").ok());
  ASSERT_TRUE(RemoveVmRecord(dir.path(), "vm-1").ok());  // absent is fine
  EXPECT_EQ(ReadVmRecords(dir.path()).records.size(), 1u);
}

TEST(VmRecordsTest, UnreadableRecordIsReportedNotFatal) {
  TempDir dir = TempDir::Create("vm-records").value();
  ASSERT_TRUE(WriteVmRecord(dir.path(), Sample()).ok());
  ASSERT_TRUE(WriteStringToFile(dir.File("broken.json"), "{\"name\": 3").ok());
  ASSERT_TRUE(WriteStringToFile(dir.File("role.json"), R"({"name":"x","role":"zombie","launch_spec":{}})").ok());
  LoadedRecords loaded = ReadVmRecords(dir.path());
  EXPECT_EQ(loaded.records.size(), 1u);
  EXPECT_EQ(loaded.errors.size(), 2u);
}

TEST(VmRecordsTest, MissingDirectoryIsEmpty) {
  LoadedRecords loaded = ReadVmRecords("/nonexistent/escdr/vms");
  EXPECT_TRUE(loaded.records.empty());
  EXPECT_TRUE(loaded.errors.empty());
}

TEST(VmRecordsTest, LocalNamesMustBeSafeInPathsAndQemuOptions) {
  EXPECT_TRUE(ValidateLocalName("VM", "web-01.eu_2").ok());
  for (const char* bad : {"", ".hidden", "a/b", "a,b", "a b", "../x"}) {
    EXPECT_EQ(ValidateLocalName("VM", bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ValidateLocalName("VM", std::string(65, 'a')).ok());
}

}  // namespace
}  // namespace escdr::agent
