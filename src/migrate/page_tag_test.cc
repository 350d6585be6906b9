// The keyed page tags of wire protocol version 3 (migrate/page_tag.h).
#include "migrate/page_tag.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <vector>

#include <gtest/gtest.h>

#include "escdr/page/page.h"

namespace escdr::migrate_internal {
namespace {

std::vector<std::uint8_t> SomePage(std::uint8_t seed) {
  std::vector<std::uint8_t> page(kPageSize);
  for (std::size_t i = 0; i < page.size(); ++i) page[i] = static_cast<std::uint8_t>(i * 7 + seed);
  return page;
}

TEST(PageTagTest, KeysAreFreshAndRandom) {
  auto a = NewDonorKey();
  auto b = NewDonorKey();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(*a, *b);
  EXPECT_NE(*a, wire::DonorKey{});
}

TEST(PageTagTest, TagIsGmacWithTheSequenceNumberAsNonce) {
  // The construction of wire-protocol §6, computed through OpenSSL's
  // separate EVP_MAC "GMAC" implementation: key, nonce = u64 LE seq and four
  // zero bytes, the page as the authenticated data.
  wire::DonorKey key;
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(0x10 + i);
  const std::uint64_t seq = 0x0102030405060708ull;
  auto page = SomePage(1);
  std::uint8_t nonce[12] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0};
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "GMAC", nullptr);
  ASSERT_NE(mac, nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  ASSERT_NE(ctx, nullptr);
  char cipher[] = "AES-128-GCM";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_IV, nonce, sizeof(nonce)),
      OSSL_PARAM_construct_end()};
  wire::PageTag want{};
  std::size_t len = 0;
  ASSERT_EQ(EVP_MAC_init(ctx, key.data(), key.size(), params), 1);
  ASSERT_EQ(EVP_MAC_update(ctx, page.data(), page.size()), 1);
  ASSERT_EQ(EVP_MAC_final(ctx, want.data(), &len, want.size()), 1);
  EXPECT_EQ(len, want.size());
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);

  auto t = PageTagger::Create(key);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  auto got = t->Tag(seq, page.data());
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, want);
  // The context is reused: a second tag of another page does not disturb it.
  ASSERT_TRUE(t->Tag(seq + 1, SomePage(2).data()).has_value());
  EXPECT_EQ(*t->Tag(seq, page.data()), want);
}

TEST(PageTagTest, VerifyAcceptsTheSamePageOnly) {
  auto key = NewDonorKey();
  ASSERT_TRUE(key.has_value());
  auto source = PageTagger::Create(*key);
  auto destination = PageTagger::Create(*key);
  ASSERT_TRUE(source.has_value() && destination.has_value());
  auto page = SomePage(9);
  auto tag = source->Tag(17, page.data());
  ASSERT_TRUE(tag.has_value()) << tag.error().message();
  EXPECT_TRUE(destination->Verify(17, page.data(), *tag));
  // One flipped bit anywhere in the page, another sequence number, or
  // another key: refused.
  for (std::size_t at : {std::size_t{0}, std::size_t{2048}, kPageSize - 1}) {
    auto changed = page;
    changed[at] ^= 0x01;
    EXPECT_FALSE(destination->Verify(17, changed.data(), *tag)) << "byte " << at;
  }
  EXPECT_FALSE(destination->Verify(18, page.data(), *tag));
  auto other_key = NewDonorKey();
  ASSERT_TRUE(other_key.has_value());
  auto other = PageTagger::Create(*other_key);
  ASSERT_TRUE(other.has_value());
  EXPECT_FALSE(other->Verify(17, page.data(), *tag));
}

}  // namespace
}  // namespace escdr::migrate_internal
