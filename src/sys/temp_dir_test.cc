#include "escdr/sys/temp_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

bool Exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

TEST(TempDirTest, CreatesPrivateUniqueDirectories) {
  auto a = TempDir::Create("escdr-td");
  auto b = TempDir::Create("escdr-td");
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(a->path(), b->path());
  struct stat st {};
  ASSERT_EQ(::stat(a->path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(a->path().front(), '/');
  EXPECT_NE(a->path().find("escdr-td."), std::string::npos);
}

TEST(TempDirTest, DestructorRemovesNestedContentButNotSymlinkTargets) {
  auto outside = TempDir::Create("escdr-td-outside");
  ASSERT_TRUE(outside.has_value());
  ASSERT_TRUE(WriteStringToFile(outside->File("keep"), "keep").ok());
  std::string path;
  {
    auto dir = TempDir::Create("escdr-td");
    ASSERT_TRUE(dir.has_value());
    path = dir->path();
    std::filesystem::create_directories(dir->File("a/b/c"));
    ASSERT_TRUE(WriteStringToFile(dir->File("a/b/c/file"), "x").ok());
    ASSERT_TRUE(WriteStringToFile(dir->File("top"), "y").ok());
    ASSERT_EQ(::symlink(outside->path().c_str(), dir->File("link").c_str()), 0);
  }
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(Exists(outside->File("keep")));
}

TEST(TempDirTest, ReleaseKeepsTheDirectory) {
  std::string kept;
  {
    auto dir = TempDir::Create("escdr-td");
    ASSERT_TRUE(dir.has_value());
    kept = dir->Release();
    EXPECT_TRUE(dir->path().empty());
  }
  EXPECT_TRUE(Exists(kept));
  EXPECT_TRUE(RemoveRecursively(kept).ok());
  EXPECT_FALSE(Exists(kept));
}

TEST(TempDirTest, MoveAssignmentRemovesTheOverwrittenDirectory) {
  auto a = TempDir::Create("escdr-td");
  auto b = TempDir::Create("escdr-td");
  ASSERT_TRUE(a.has_value() && b.has_value());
  std::string a_path = a->path(), b_path = b->path();
  *a = std::move(*b);
  EXPECT_FALSE(Exists(a_path));
  EXPECT_EQ(a->path(), b_path);
  EXPECT_TRUE(Exists(b_path));
}

TEST(TempDirTest, CustomParentIsUsedAndMissingParentFails) {
  auto parent = TempDir::Create("escdr-td-parent");
  ASSERT_TRUE(parent.has_value());
  auto child = TempDir::Create("x", parent->path());
  ASSERT_TRUE(child.has_value());
  EXPECT_EQ(child->path().rfind(parent->path() + "/x.", 0), 0u);
  auto bad = TempDir::Create("x", "/nonexistent-escdr-parent");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("/nonexistent-escdr-parent"), std::string::npos);
}

TEST(RemoveRecursivelyTest, MissingPathIsOk) {
  EXPECT_TRUE(RemoveRecursively("/tmp/escdr-definitely-missing-path-1234").ok());
}

}  // namespace
}  // namespace escdr
