// The role x request table (docs/security.md §6): every role against every
// control request the agent serves, as the issue specifies it, written out
// here independently of the table in authorization.cc; the refusal messages;
// the defaults for certificates without a role, the pre-shared key and
// --insecure.
#include "agent/authorization.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace escdr::agent {
namespace {

constexpr PeerRole kRoles[] = {PeerRole::kObserver, PeerRole::kAgent, PeerRole::kOperator};

// What each role may send: O = observer, A = agent, P = operator.
struct Expected {
  const char* op;
  const char* allowed;  // letters of the roles that may
};

// Every control request the agent serves (agent.cc ServeConnection and
// HandleSimple, the migrate_out connection's cancel, reload).
constexpr Expected kExpected[] = {
    {"ping", "OAP"},      {"status", "OAP"},  {"list_vms", "OAP"}, {"migrate_in", "AP"},
    {"commit_in", "AP"},  {"abort_in", "AP"}, {"start_vm", "P"},   {"stop_vm", "P"},
    {"migrate_out", "P"}, {"cancel", "P"},    {"reload", "P"},     {"libvirt_probe", "AP"},
};

char Letter(PeerRole r) {
  switch (r) {
    case PeerRole::kObserver:
      return 'O';
    case PeerRole::kAgent:
      return 'A';
    case PeerRole::kOperator:
      return 'P';
  }
  return '?';
}

TEST(AuthorizationTest, EveryRoleAgainstEveryRequest) {
  for (const Expected& e : kExpected) {
    for (PeerRole r : kRoles) {
      const bool want = std::string(e.allowed).find(Letter(r)) != std::string::npos;
      EXPECT_EQ(MaySend(r, e.op), want) << wire::RoleName(r) << " sending " << e.op;
      const Status s = Authorize(CertificatePrincipal("x", r), e.op);
      EXPECT_EQ(s.ok(), want) << wire::RoleName(r) << " sending " << e.op << ": " << s.ToString();
      if (!want) {
        EXPECT_EQ(s.code(), StatusCode::kNotSupported);
      }
    }
  }
}

TEST(AuthorizationTest, TheTableListsExactlyTheRequestsTheAgentServes) {
  std::set<std::string> table, expected;
  for (const RequestRule& r : RequestRules()) {
    EXPECT_TRUE(table.insert(std::string(r.op)).second) << "twice in the table: " << r.op;
    // Operators may send everything.
    EXPECT_TRUE(r.operator_) << r.op;
  }
  for (const Expected& e : kExpected) expected.insert(e.op);
  EXPECT_EQ(table, expected);
}

TEST(AuthorizationTest, UnknownRequestsAreForOperatorsOnly) {
  for (const char* op : {"reboot-the-world", "", "STOP_VM", "stop_vm "}) {
    EXPECT_FALSE(MaySend(PeerRole::kObserver, op)) << op;
    EXPECT_FALSE(MaySend(PeerRole::kAgent, op)) << op;
    EXPECT_TRUE(MaySend(PeerRole::kOperator, op)) << op;
  }
}

TEST(AuthorizationTest, RefusalNamesTheCertificateItsRoleTheRequestAndWhoMay) {
  Status s = Authorize(CertificatePrincipal("h2", PeerRole::kAgent), "stop_vm");
  EXPECT_EQ(s.message(),
            "certificate h2 has role agent, which may not send stop_vm; operators may");
  s = Authorize(CertificatePrincipal("watch", PeerRole::kObserver), "migrate_in");
  EXPECT_EQ(s.message(),
            "certificate watch has role observer, which may not send migrate_in; agents and "
            "operators may");
}

TEST(AuthorizationTest, CertificateWithoutRoleIsAnObserverAndTheErrorSaysHowToReissue) {
  const Principal p = CertificatePrincipal("old-cli", std::nullopt);
  EXPECT_EQ(p.role, PeerRole::kObserver);
  EXPECT_TRUE(Authorize(p, "status").ok());
  const Status s = Authorize(p, "start_vm");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("certificate old-cli states no role"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("escdr ca issue old-cli --renew --role"), std::string::npos)
      << s.message();
  EXPECT_EQ(DescribePrincipal(p), "old-cli (no role: observer)");
}

TEST(AuthorizationTest, PreSharedKeyAndInsecureAreOperators) {
  for (const Principal& p : {PskPrincipal(), InsecurePrincipal()}) {
    EXPECT_EQ(p.role, PeerRole::kOperator);
    for (const Expected& e : kExpected) EXPECT_TRUE(Authorize(p, e.op).ok()) << e.op;
  }
  EXPECT_EQ(DescribePrincipal(PskPrincipal()), "pre-shared key (operator)");
  EXPECT_EQ(DescribePrincipal(CertificatePrincipal("h1", PeerRole::kAgent)), "h1 (role agent)");
}

TEST(AuthorizationTest, RolesThatMayReadsAsEnglish) {
  EXPECT_EQ(RolesThatMay("status"), "every role");
  EXPECT_EQ(RolesThatMay("commit_in"), "agents and operators");
  EXPECT_EQ(RolesThatMay("reload"), "operators");
}

}  // namespace
}  // namespace escdr::agent
