#include "escdr/catalog/directory_catalog_store.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace escdr {
namespace {

using ::testing::HasSubstr;

const VmKind kDebian{"debian", "12", "qemu", "7.2"};
const VmKind kAlpine{"alpine", "3.19", "qemu", "7.2"};

class DirectoryCatalogStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/escdr-catalog-store-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    Result<std::unique_ptr<DirectoryCatalogStore>> store =
        DirectoryCatalogStore::Open(root_ + "/catalogs");
    ASSERT_TRUE(store.has_value()) << store.error().message();
    store_ = std::move(store).value();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  std::vector<std::string> FileNames() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(store_->dir())) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string root_;
  std::unique_ptr<DirectoryCatalogStore> store_;
};

TEST_F(DirectoryCatalogStoreTest, PutGetListRemove) {
  ASSERT_TRUE(store_->PutCatalog(kDebian, "debian bytes").ok());
  ASSERT_TRUE(store_->PutCatalog(kAlpine, "alpine").ok());
  Result<std::string> got = store_->GetCatalog(kDebian);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, "debian bytes");

  Result<std::vector<StoredCatalogInfo>> list = store_->ListCatalogs();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].kind, kAlpine);  // ordered by kind
  EXPECT_EQ((*list)[0].size_bytes, 6u);
  EXPECT_EQ((*list)[1].kind, kDebian);
  EXPECT_EQ((*list)[1].size_bytes, 12u);
  EXPECT_THAT((*list)[1].created_at, ::testing::MatchesRegex("20[0-9-]+T[0-9:]+Z"));
  EXPECT_EQ(FileNames(),
            (std::vector<std::string>{"alpine+3.19+qemu+7.2.catalog", "debian+12+qemu+7.2.catalog"}));

  ASSERT_TRUE(store_->RemoveCatalog(kDebian).ok());
  EXPECT_TRUE(store_->GetCatalog(kDebian).error().IsNotFound());
  EXPECT_EQ(store_->ListCatalogs()->size(), 1u);
}

TEST_F(DirectoryCatalogStoreTest, PutReplaces) {
  ASSERT_TRUE(store_->PutCatalog(kDebian, "first, longer").ok());
  ASSERT_TRUE(store_->PutCatalog(kDebian, "second").ok());
  EXPECT_EQ(*store_->GetCatalog(kDebian), "second");
  EXPECT_EQ(FileNames().size(), 1u);
}

TEST_F(DirectoryCatalogStoreTest, MissingCatalogIsNotFound) {
  Result<std::string> got = store_->GetCatalog(kDebian);
  ASSERT_FALSE(got.has_value());
  EXPECT_TRUE(got.error().IsNotFound());
  EXPECT_THAT(got.error().message(), HasSubstr("no catalog for debian 12 / qemu 7.2"));
  EXPECT_TRUE(store_->RemoveCatalog(kDebian).IsNotFound());
}

TEST_F(DirectoryCatalogStoreTest, KindsWithSeparatorsGetDistinctFiles) {
  const VmKind a{"a+b", "1", "q", "2"};
  const VmKind b{"a", "b+1", "q", "2"};
  const VmKind c{"my os/x", "1%", "q", "2"};
  ASSERT_TRUE(store_->PutCatalog(a, "A").ok());
  ASSERT_TRUE(store_->PutCatalog(b, "B").ok());
  ASSERT_TRUE(store_->PutCatalog(c, "C").ok());
  EXPECT_EQ(*store_->GetCatalog(a), "A");
  EXPECT_EQ(*store_->GetCatalog(b), "B");
  EXPECT_EQ(*store_->GetCatalog(c), "C");
  EXPECT_EQ(DirectoryCatalogStore::FileNameOf(c), "my%20os%2Fx+1%25+q+2.catalog");
  for (const VmKind& k : {a, b, c, kDebian}) {
    EXPECT_EQ(DirectoryCatalogStore::KindOfFileName(DirectoryCatalogStore::FileNameOf(k)), k);
  }
  Result<std::vector<StoredCatalogInfo>> list = store_->ListCatalogs();
  ASSERT_EQ(list->size(), 3u);
}

TEST_F(DirectoryCatalogStoreTest, ForeignFilesAreIgnored) {
  ASSERT_TRUE(store_->PutCatalog(kDebian, "x").ok());
  for (const char* name : {"README", ".debian+12+qemu+7.2.catalog.tmp.1.0", "a+b+c.catalog",
                           "a+b+c+d+e.catalog", "a%41+b+c+d.catalog", "a+b+c+d.catalog.bak"}) {
    std::ofstream(store_->dir() + "/" + name) << "junk";
  }
  Result<std::vector<StoredCatalogInfo>> list = store_->ListCatalogs();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].kind, kDebian);
}

TEST_F(DirectoryCatalogStoreTest, InvalidKindIsRejected) {
  Status s = store_->PutCatalog(VmKind{"debian", "", "qemu", "7.2"}, "x");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_THAT(s.message(), HasSubstr("OS version is empty"));
}

TEST_F(DirectoryCatalogStoreTest, KindTooLongForAFileNameIsRejected) {
  const std::string slashes(64, '/');  // each becomes %2F
  Status s = store_->PutCatalog(VmKind{slashes, slashes, "qemu", "7.2"}, "x");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_THAT(s.message(), HasSubstr("too long for a file name"));
}

TEST_F(DirectoryCatalogStoreTest, ConcurrentPutsLeaveOneWholeCatalog) {
  const std::string a(1 << 20, 'a');
  const std::string b(1 << 19, 'b');
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) EXPECT_TRUE(store_->PutCatalog(kDebian, t % 2 ? a : b).ok());
    });
  }
  for (auto& t : threads) t.join();
  const std::string got = *store_->GetCatalog(kDebian);
  EXPECT_TRUE(got == a || got == b);
  EXPECT_EQ(FileNames().size(), 1u);  // no temporary file left behind
}

TEST_F(DirectoryCatalogStoreTest, OpenOnAFileFails) {
  std::ofstream(root_ + "/plain") << "x";
  Result<std::unique_ptr<DirectoryCatalogStore>> store =
      DirectoryCatalogStore::Open(root_ + "/plain");
  ASSERT_FALSE(store.has_value());
  EXPECT_EQ(store.error().code(), StatusCode::kIOError);
}

}  // namespace
}  // namespace escdr
