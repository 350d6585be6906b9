#include "escdr/sys/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;

class SubprocessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("escdr-sp");
    ASSERT_TRUE(d.has_value());
    dir_ = std::move(*d);
  }
  static SubprocessOptions Shell(const std::string& script) {
    SubprocessOptions o;
    o.argv = {"sh", "-c", script};
    return o;
  }
  static ExitStatus Run(const SubprocessOptions& o) {
    auto p = Subprocess::Spawn(o);
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    if (!p.has_value()) return {};
    auto s = p->Wait();
    EXPECT_TRUE(s.has_value());
    return s.value_or(ExitStatus{});
  }
  static bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }
  TempDir dir_;
};

TEST_F(SubprocessTest, ReportsTheExitCode) {
  ExitStatus s = Run(Shell("exit 3"));
  EXPECT_TRUE(s.exited);
  EXPECT_EQ(s.code, 3);
  EXPECT_FALSE(s.success());
  EXPECT_EQ(s.ToString(), "exit code 3");
  EXPECT_TRUE(Run(Shell("true")).success());
}

TEST_F(SubprocessTest, ReportsDeathBySignal) {
  ExitStatus s = Run(Shell("kill -TERM $$"));
  EXPECT_FALSE(s.exited);
  EXPECT_EQ(s.signal, SIGTERM);
  EXPECT_NE(s.ToString().find("signal 15"), std::string::npos);
}

TEST_F(SubprocessTest, RedirectsStdoutAndStderrToFiles) {
  SubprocessOptions o = Shell("echo out; echo err >&2; cat");  // cat: stdin is /dev/null
  o.stdout_path = dir_.File("out");
  o.stderr_path = dir_.File("err");
  EXPECT_TRUE(Run(o).success());
  EXPECT_EQ(ReadFileToString(dir_.File("out")).value_or(""), "out\n");
  EXPECT_EQ(ReadFileToString(dir_.File("err")).value_or(""), "err\n");
}

TEST_F(SubprocessTest, SamePathForBothStreamsSharesOneFileAndAppendKeepsOldContent) {
  ASSERT_TRUE(WriteStringToFile(dir_.File("log"), "old\n").ok());
  SubprocessOptions o = Shell("echo one; echo two >&2; echo three");
  o.stdout_path = o.stderr_path = dir_.File("log");
  o.append_output = true;
  EXPECT_TRUE(Run(o).success());
  EXPECT_EQ(ReadFileToString(dir_.File("log")).value_or(""), "old\none\ntwo\nthree\n");
}

TEST_F(SubprocessTest, EnvironmentCanBeSetAndCleared) {
  ::setenv("ESCDR_SP_INHERITED", "parent", 1);
  SubprocessOptions o = Shell("echo \"$ESCDR_SP_INHERITED:$ESCDR_SP_SET\"");
  o.stdout_path = dir_.File("out");
  o.env = {{"ESCDR_SP_SET", "child"}};
  EXPECT_TRUE(Run(o).success());
  EXPECT_EQ(ReadFileToString(dir_.File("out")).value_or(""), "parent:child\n");

  o.inherit_env = false;
  o.argv[0] = "/bin/sh";  // no PATH lookup needed in the child
  EXPECT_TRUE(Run(o).success());
  EXPECT_EQ(ReadFileToString(dir_.File("out")).value_or(""), ":child\n");
  ::unsetenv("ESCDR_SP_INHERITED");
}

TEST_F(SubprocessTest, WorkingDirectoryIsApplied) {
  SubprocessOptions o = Shell("pwd");
  o.cwd = dir_.path();
  o.stdout_path = dir_.File("out");
  EXPECT_TRUE(Run(o).success());
  EXPECT_EQ(ReadFileToString(dir_.File("out")).value_or(""), dir_.path() + "\n");
}

TEST_F(SubprocessTest, MissingProgramIsNotFound) {
  SubprocessOptions o;
  o.argv = {"escdr-no-such-program-xyz"};
  auto p = Subprocess::Spawn(o);
  ASSERT_FALSE(p.has_value());
  EXPECT_TRUE(p.error().IsNotFound());
  EXPECT_NE(p.error().message().find("escdr-no-such-program-xyz"), std::string::npos);
}

TEST_F(SubprocessTest, ExecFailureIsReportedBySpawn) {
  std::string bogus = dir_.File("bogus");
  ASSERT_TRUE(WriteStringToFile(bogus, std::string("\x7f" "ELFgarbage", 10)).ok());
  ASSERT_EQ(::chmod(bogus.c_str(), 0755), 0);
  SubprocessOptions o;
  o.argv = {bogus};
  auto p = Subprocess::Spawn(o);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code(), StatusCode::kIOError);
  EXPECT_NE(p.error().message().find("cannot exec " + bogus), std::string::npos);
}

TEST_F(SubprocessTest, BadWorkingDirectoryIsReportedBySpawn) {
  SubprocessOptions o = Shell("true");
  o.cwd = dir_.File("missing");
  auto p = Subprocess::Spawn(o);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("chdir"), std::string::npos);
}

TEST_F(SubprocessTest, WaitForTimesOutWhileRunningAndKillEndsIt) {
  auto p = Subprocess::Spawn(Shell("exec sleep 1000"));
  ASSERT_TRUE(p.has_value());
  auto running = p->TryWait();
  ASSERT_TRUE(running.has_value());
  EXPECT_FALSE(running->has_value());
  auto w = p->WaitFor(milliseconds(20));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::kTimeout);
  ASSERT_TRUE(p->Kill(SIGTERM).ok());
  w = p->WaitFor(std::chrono::seconds(60));
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(w->signal, SIGTERM);
  EXPECT_EQ(p->exit_status()->signal, SIGTERM);
  // Signalling an ended child is harmless.
  EXPECT_TRUE(p->Kill(SIGKILL).ok());
}

TEST_F(SubprocessTest, DestructorKillsAndReapsARunningChild) {
  pid_t pid;
  {
    auto p = Subprocess::Spawn(Shell("exec sleep 1000"));
    ASSERT_TRUE(p.has_value());
    pid = p->pid();
    ASSERT_TRUE(ProcessExists(pid));
  }
  // Reaped, not a zombie: the pid no longer exists at all.
  EXPECT_FALSE(ProcessExists(pid));
}

TEST_F(SubprocessTest, MoveTransfersOwnership) {
  auto p = Subprocess::Spawn(Shell("exec sleep 1000"));
  ASSERT_TRUE(p.has_value());
  pid_t pid = p->pid();
  Subprocess moved = std::move(*p);
  EXPECT_FALSE(p->valid());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved.pid(), pid);
  Subprocess assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(ProcessExists(pid));
  assigned = Subprocess();  // destroys the owned child
  EXPECT_FALSE(ProcessExists(pid));
}

TEST_F(SubprocessTest, DescriptorsDoNotLeakUnlessInherited) {
  // A descriptor without close-on-exec, as a careless library would open it.
  int raw = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(raw, 0);
  UniqueFd fd(::fcntl(raw, F_DUPFD, 300));
  ::close(raw);
  ASSERT_GE(fd.get(), 300);
  std::string check = "[ -e /proc/$$/fd/" + std::to_string(fd.get()) + " ]";
  EXPECT_EQ(Run(Shell(check)).code, 1);
  SubprocessOptions o = Shell(check);
  o.inherit_fds = {fd.get()};
  EXPECT_TRUE(Run(o).success());
}

TEST_F(SubprocessTest, StdioCollisionInInheritedFdsIsRejected) {
  SubprocessOptions o = Shell("true");
  o.inherit_fds = {1};
  auto p = Subprocess::Spawn(o);
  ASSERT_FALSE(p.has_value());
  EXPECT_TRUE(p.error().IsInvalidArgument());
}

TEST_F(SubprocessTest, ChildDiesWhenTheSpawningThreadExits) {
  // Documents the PR_SET_PDEATHSIG caveat in subprocess.h.
  Subprocess child;
  std::thread spawner([&child] {
    auto p = Subprocess::Spawn(Shell("exec sleep 1000"));
    ASSERT_TRUE(p.has_value());
    child = std::move(*p);
  });
  spawner.join();
  auto s = child.WaitFor(std::chrono::seconds(60));
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->signal, SIGKILL);
}

TEST_F(SubprocessTest, KillWithParentOffSurvivesTheSpawningThread) {
  Subprocess child;
  std::thread spawner([&child] {
    SubprocessOptions o = Shell("exec sleep 1000");
    o.kill_with_parent = false;
    auto p = Subprocess::Spawn(o);
    ASSERT_TRUE(p.has_value());
    child = std::move(*p);
  });
  spawner.join();
  auto s = child.WaitFor(milliseconds(200));
  EXPECT_FALSE(s.has_value());  // still running; the destructor kills it
}

TEST(FindProgramTest, FindsShInPathAndChecksExplicitPaths) {
  auto sh = FindProgram("sh");
  ASSERT_TRUE(sh.has_value());
  EXPECT_EQ(sh->back(), 'h');
  EXPECT_EQ(sh->front(), '/');
  EXPECT_TRUE(FindProgram("/bin/sh").has_value());
  EXPECT_FALSE(FindProgram("/etc/passwd").has_value());
}

}  // namespace
}  // namespace escdr
