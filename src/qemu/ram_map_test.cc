#include "escdr/qemu/ram_map.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "escdr/qemu/qmp.h"
#include "escdr/sys/unix_socket.h"
#include "testing/fake_qmp_server.h"

namespace escdr {
namespace {

using testing::FakeQmpServer;
using ::testing::HasSubstr;

// Real answers of QEMU 7.2.22 (the host's) and 10.0.13 (tools/install-qemu.sh)
// to human-monitor-command over QMP, `-machine pc -m 262152K` (256 MiB plus
// the 8 KiB TCG pad) with anonymous memory, unless said otherwise.
const char* kGpa2Hva72 = "Host virtual address for 0x0 (pc.ram) is 0x7fbd7fe00000\r\n";
const char* kGpa2Hva100 = "Host virtual address for 0x0 (pc.ram) is 0x7f8167e00000\r\n";
// q35 with -object memory-backend-memfd,id=mem0,size=256M (7.2).
const char* kGpa2HvaMemfd72 = "Host virtual address for 0x0 (mem0) is 0x7fdc2ffff000\r\n";
// -m 4G: the RAM above 4 GiB is the same block, 3 GiB further in.
const char* kGpa2HvaHigh100 = "Host virtual address for 0x100000000 (pc.ram) is 0x7f7f87e00000\r\n";
const char* kGpa2HvaUnmapped = "No memory is mapped at address 0x20000000\r\n";
const char* kGpa2HvaNoArg =
    "unexpected end of expression\r\nTry \"help gpa2hva\" for more information\r\n";

const char* kRamBlock72 =
    "              Block Name    PSize              Offset               Used              "
    "Total\r\n"
    "                  pc.ram    4 KiB  0x0000000000000000 0x0000000010002000 "
    "0x0000000010002000\r\n"
    "    /rom@etc/acpi/tables    4 KiB  0x00000000100c0000 0x0000000000020000 "
    "0x0000000000200000\r\n"
    "                 pc.bios    4 KiB  0x0000000010040000 0x0000000000040000 "
    "0x0000000000040000\r\n"
    "                  pc.rom    4 KiB  0x0000000010080000 0x0000000000020000 "
    "0x0000000000020000\r\n"
    "   /rom@etc/table-loader    4 KiB  0x00000000102c0000 0x0000000000001000 "
    "0x0000000000010000\r\n"
    "      /rom@etc/acpi/rsdp    4 KiB  0x0000000010300000 0x0000000000001000 "
    "0x0000000000001000\r\n";

const char* kRamBlock100 =
    "              Block Name    PSize              Offset               Used              "
    "Total                HVA  RO\r\n"
    "                  pc.ram    4 KiB  0x0000000000000000 0x0000000010002000 "
    "0x0000000010002000 0x00007f8167e00000  rw\r\n"
    "    /rom@etc/acpi/tables    4 KiB  0x00000000100c0000 0x0000000000020000 "
    "0x0000000000200000 0x00007f817e800000  ro\r\n"
    "                 pc.bios    4 KiB  0x0000000010040000 0x0000000000040000 "
    "0x0000000000040000 0x00007f817ee00000  ro\r\n"
    "                  pc.rom    4 KiB  0x0000000010080000 0x0000000000020000 "
    "0x0000000000020000 0x00007f817ec00000  ro\r\n"
    "   /rom@etc/table-loader    4 KiB  0x00000000102c0000 0x0000000000001000 "
    "0x0000000000010000 0x00007f817e600000  ro\r\n"
    "      /rom@etc/acpi/rsdp    4 KiB  0x0000000010300000 0x0000000000001000 "
    "0x0000000000001000 0x00007f817e400000  ro\r\n";

// q35 with memory-backend-memfd,id=mem0 (7.2).
const char* kRamBlockMemfd72 =
    "              Block Name    PSize              Offset               Used              "
    "Total\r\n"
    "                    mem0    4 KiB  0x0000000000000000 0x0000000010000000 "
    "0x0000000010000000\r\n"
    "    /rom@etc/acpi/tables    4 KiB  0x0000000010080000 0x0000000000020000 "
    "0x0000000000200000\r\n"
    "                 pc.bios    4 KiB  0x0000000010000000 0x0000000000040000 "
    "0x0000000000040000\r\n";

TEST(ParseGpa2HvaTest, ReadsQemu72) {
  auto m = ParseGpa2Hva(kGpa2Hva72);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->block, "pc.ram");
  EXPECT_EQ(m->host_address, 0x7fbd7fe00000u);
  EXPECT_EQ(m->length, 0u);
}

TEST(ParseGpa2HvaTest, ReadsQemu100) {
  auto m = ParseGpa2Hva(kGpa2Hva100);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->block, "pc.ram");
  EXPECT_EQ(m->host_address, 0x7f8167e00000u);
}

TEST(ParseGpa2HvaTest, ReadsMemfdBackendAndHighAddresses) {
  auto m = ParseGpa2Hva(kGpa2HvaMemfd72);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->block, "mem0");
  EXPECT_EQ(m->host_address, 0x7fdc2ffff000u);
  auto high = ParseGpa2Hva(kGpa2HvaHigh100);
  ASSERT_TRUE(high.has_value()) << high.error().ToString();
  EXPECT_EQ(high->host_address, 0x7f7f87e00000u);
}

TEST(ParseGpa2HvaTest, UnmappedAddressIsNotFound) {
  auto m = ParseGpa2Hva(kGpa2HvaUnmapped);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(m.error().message(), HasSubstr("No memory is mapped at address 0x20000000"));
}

TEST(ParseGpa2HvaTest, MalformedAnswersAreProtocolErrorsQuotingThem) {
  for (const char* bad : {kGpa2HvaNoArg, "", "Host virtual address for 0x0 (pc.ram) is zz\r\n",
                          "Host virtual address for 0x0 pc.ram is 0x1000\r\n",
                          "Host virtual address for 0x0 () is 0x1000\r\n",
                          "Host virtual address for zero (pc.ram) is 0x1000\r\n",
                          "Host virtual address for 0x0 (pc.ram) is 0x1000\r\nextra\r\n"}) {
    auto m = ParseGpa2Hva(bad);
    ASSERT_FALSE(m.has_value()) << bad;
    EXPECT_EQ(m.error().code(), StatusCode::kProtocolError) << bad;
    EXPECT_THAT(m.error().message(), HasSubstr("gpa2hva printed")) << bad;
  }
  auto m = ParseGpa2Hva(kGpa2HvaNoArg);
  EXPECT_THAT(m.error().message(),
              HasSubstr("\"unexpected end of expression\\r\\nTry \\\"help gpa2hva\\\""));
}

TEST(ParseRamBlockUsedLengthTest, ReadsQemu72) {
  auto used = ParseRamBlockUsedLength(kRamBlock72, "pc.ram");
  ASSERT_TRUE(used.has_value()) << used.error().ToString();
  EXPECT_EQ(*used, 0x10002000u);
  auto rsdp = ParseRamBlockUsedLength(kRamBlock72, "/rom@etc/acpi/rsdp");
  ASSERT_TRUE(rsdp.has_value());
  EXPECT_EQ(*rsdp, 0x1000u);
}

TEST(ParseRamBlockUsedLengthTest, ReadsQemu100WithItsHvaAndRoColumns) {
  auto used = ParseRamBlockUsedLength(kRamBlock100, "pc.ram");
  ASSERT_TRUE(used.has_value()) << used.error().ToString();
  EXPECT_EQ(*used, 0x10002000u);
  auto tables = ParseRamBlockUsedLength(kRamBlock100, "/rom@etc/acpi/tables");
  ASSERT_TRUE(tables.has_value());
  EXPECT_EQ(*tables, 0x20000u);  // Used, not Total (0x200000)
}

TEST(ParseRamBlockUsedLengthTest, ReadsOtherPageSizes) {
  const std::string table =
      "              Block Name    PSize              Offset               Used              "
      "Total\r\n"
      "                    mem0    2 MiB  0x0000000000000000 0x0000000040000000 "
      "0x0000000040000000\r\n";
  auto used = ParseRamBlockUsedLength(table, "mem0");
  ASSERT_TRUE(used.has_value()) << used.error().ToString();
  EXPECT_EQ(*used, 0x40000000u);
}

TEST(ParseRamBlockUsedLengthTest, MissingBlockIsNotFoundListingTheBlocks) {
  auto used = ParseRamBlockUsedLength(kRamBlockMemfd72, "pc.ram");
  ASSERT_FALSE(used.has_value());
  EXPECT_EQ(used.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(used.error().message(), HasSubstr("no block 'pc.ram'"));
  EXPECT_THAT(used.error().message(), HasSubstr("mem0, /rom@etc/acpi/tables, pc.bios"));
}

TEST(ParseRamBlockUsedLengthTest, MalformedTablesAreProtocolErrorsQuotingTheLine) {
  const std::string header =
      "              Block Name    PSize              Offset               Used              "
      "Total\r\n";
  struct Case {
    std::string output;
    std::string quoted;  // what the message must contain
  };
  const Case cases[] = {
      {"", "no table"},
      {"unknown command: 'info ramblock'\r\n", "\"unknown command: 'info ramblock'\\r\\n\""},
      {"Block Name  PSize  Offset  Total\r\n", "lacks \"Used\": \"Block Name  PSize  Offset"},
      {header + "  pc.ram  4 KiB  0x0 0x10000000\r\n",
       "4 fields where the header has 5 columns: \"  pc.ram  4 KiB  0x0 0x10000000\""},
      {header + "  pc.ram  4 KiB  0x0 10000000 0x10000000\r\n",
       "has Used \"10000000\", not a hex number"},
      {header + "  pc.ram  4 KiB  0x0 0x1000zz 0x10000000\r\n", "has Used \"0x1000zz\""},
      {header + "  pc.ram  4 KiB  0x0 0x1001 0x1001\r\n",
       "used length of 0x1001, not a positive multiple of 4096"},
      {header + "  pc.ram  4 KiB  0x0 0x0 0x0\r\n", "used length of 0x0"},
  };
  for (const Case& c : cases) {
    auto used = ParseRamBlockUsedLength(c.output, "pc.ram");
    ASSERT_FALSE(used.has_value()) << c.output;
    EXPECT_EQ(used.error().code(), StatusCode::kProtocolError) << c.output;
    EXPECT_THAT(used.error().message(), HasSubstr(c.quoted)) << c.output;
  }
  // A bad HVA column (10.0) is reported too.
  std::string table100 = kRamBlock100;
  table100.replace(table100.find("0x00007f8167e00000"), 18, "0x00007f8167e0000g");
  auto used = ParseRamBlockUsedLength(table100, "pc.ram");
  ASSERT_FALSE(used.has_value());
  EXPECT_THAT(used.error().message(), HasSubstr("has HVA \"0x00007f8167e0000g\""));
}

// An HmpRunner that answers from a table of outputs.
HmpRunner Canned(std::map<std::string, Result<std::string>> answers) {
  return [answers = std::move(answers)](const std::string& command) -> Result<std::string> {
    auto it = answers.find(command);
    if (it == answers.end()) return Err(Status::NotSupported("unexpected command " + command));
    return it->second;
  };
}

TEST(QueryMainRamTest, CombinesGpa2HvaAndRamBlockOnQemu72) {
  auto m = QueryMainRam(Canned({{"gpa2hva 0", kGpa2Hva72}, {"info ramblock", kRamBlock72}}));
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(*m, (RamMapping{"pc.ram", 0x7fbd7fe00000u, 0x10002000u}));
}

TEST(QueryMainRamTest, CombinesGpa2HvaAndRamBlockOnQemu100) {
  auto m = QueryMainRam(Canned({{"gpa2hva 0", kGpa2Hva100}, {"info ramblock", kRamBlock100}}));
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(*m, (RamMapping{"pc.ram", 0x7f8167e00000u, 0x10002000u}));
}

TEST(QueryMainRamTest, ReadsAMemfdBackend) {
  auto m =
      QueryMainRam(Canned({{"gpa2hva 0", kGpa2HvaMemfd72}, {"info ramblock", kRamBlockMemfd72}}));
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(*m, (RamMapping{"mem0", 0x7fdc2ffff000u, 0x10000000u}));
}

TEST(QueryMainRamTest, NoRamAtZeroIsNotFound) {
  auto m = QueryMainRam(Canned(
      {{"gpa2hva 0", "No memory is mapped at address 0x0\r\n"}, {"info ramblock", kRamBlock72}}));
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kNotFound);
  EXPECT_THAT(m.error().message(), HasSubstr("no RAM block holds guest-physical 0"));
}

TEST(QueryMainRamTest, BlockMissingFromTheTableIsAProtocolError) {
  auto m = QueryMainRam(Canned({{"gpa2hva 0", kGpa2Hva72}, {"info ramblock", kRamBlockMemfd72}}));
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kProtocolError);
  EXPECT_THAT(m.error().message(), HasSubstr("no block 'pc.ram'"));
}

TEST(QueryMainRamTest, HvaColumnDisagreeingWithGpa2HvaIsAProtocolError) {
  auto m = QueryMainRam(Canned({{"gpa2hva 0",
                                 "Host virtual address for 0x0 (pc.ram) is "
                                 "0x7f8167e01000\r\n"},
                                {"info ramblock", kRamBlock100}}));
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kProtocolError);
  EXPECT_THAT(m.error().message(),
              HasSubstr("guest-physical 0 is at 0x7f8167e01000, but block 'pc.ram' starts at "
                        "0x7f8167e00000"));
}

TEST(QueryMainRamTest, RunnerErrorsPassThrough) {
  auto m = QueryMainRam(Canned({{"gpa2hva 0", Err(Status::Unavailable("QMP closed"))}}));
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kUnavailable);
}

class HmpOverQmpTest : public ::testing::Test {
 protected:
  QmpClient& Start(FakeQmpServer::Script script) {
    auto pair = UnixSocketPair();
    EXPECT_TRUE(pair.has_value());
    server_ = std::make_unique<FakeQmpServer>(std::move(pair->second), [script](FakeQmpServer& s) {
      s.Handshake();
      script(s);
    });
    auto c = QmpClient::Handshake(std::move(pair->first), "fake");
    EXPECT_TRUE(c.has_value());
    client_ = std::move(*c);
    return *client_;
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
  }
  std::unique_ptr<FakeQmpServer> server_;
  std::unique_ptr<QmpClient> client_;
};

TEST_F(HmpOverQmpTest, SendsCommandLineAndQueriesMainRam) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    auto cmd = s.ExpectCommand("human-monitor-command");
    EXPECT_EQ(cmd["arguments"], (nlohmann::json{{"command-line", "gpa2hva 0"}}));
    s.Reply(cmd, kGpa2Hva100);
    cmd = s.ExpectCommand("human-monitor-command");
    EXPECT_EQ(cmd["arguments"], (nlohmann::json{{"command-line", "info ramblock"}}));
    s.Reply(cmd, kRamBlock100);
  });
  auto m = QueryMainRam(HmpOverQmp(qmp));
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(*m, (RamMapping{"pc.ram", 0x7f8167e00000u, 0x10002000u}));
}

TEST_F(HmpOverQmpTest, QmpErrorNamesTheCommand) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    auto cmd = s.ExpectCommand("human-monitor-command");
    s.ReplyError(cmd, "GenericError", "monitor is busy");
  });
  auto out = HmpOverQmp(qmp)("info ramblock");
  ASSERT_FALSE(out.has_value());
  EXPECT_THAT(out.error().message(), HasSubstr("HMP command 'info ramblock'"));
  EXPECT_THAT(out.error().message(), HasSubstr("monitor is busy"));
}

TEST_F(HmpOverQmpTest, NonStringReplyIsAProtocolError) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    auto cmd = s.ExpectCommand("human-monitor-command");
    s.Reply(cmd, nlohmann::json::object());
  });
  auto out = HmpOverQmp(qmp)("gpa2hva 0");
  ASSERT_FALSE(out.has_value());
  EXPECT_EQ(out.error().code(), StatusCode::kProtocolError);
  EXPECT_THAT(out.error().message(), HasSubstr("returned \"{}\", not a string"));
}

}  // namespace
}  // namespace escdr
