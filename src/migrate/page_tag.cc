#include "migrate/page_tag.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fmt/format.h>

#include "escdr/page/page.h"
#include "escdr/wire/coding.h"

namespace escdr::migrate_internal {
namespace {

EVP_CIPHER_CTX* Ctx(void* p) { return static_cast<EVP_CIPHER_CTX*>(p); }

Status OpenSslError(std::string_view what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = "no OpenSSL error queued";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return Status::Internal(fmt::format("{}: {}", what, buf));
}

}  // namespace

Result<wire::DonorKey> NewDonorKey() {
  wire::DonorKey key;
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return Err(OpenSslError("cannot draw a random donor key"));
  }
  return key;
}

void PageTagger::CtxFree::operator()(void* ctx) const { EVP_CIPHER_CTX_free(Ctx(ctx)); }

Result<PageTagger> PageTagger::Create(const wire::DonorKey& key) {
  std::unique_ptr<void, CtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return Err(OpenSslError("cannot allocate a cipher context for page tags"));
  static_assert(wire::kDonorKeySize == 16, "AES-128 takes a 16-byte key");
  if (EVP_EncryptInit_ex(Ctx(ctx.get()), EVP_aes_128_gcm(), nullptr, key.data(), nullptr) != 1) {
    return Err(OpenSslError("cannot set up AES-128-GCM for page tags"));
  }
  return PageTagger(std::move(ctx));
}

Result<wire::PageTag> PageTagger::Tag(std::uint64_t seq, const std::uint8_t* page) {
  EVP_CIPHER_CTX* ctx = Ctx(ctx_.get());
  std::uint8_t nonce[12] = {};  // the default GCM IV length
  wire::StoreFixed64(nonce, seq);
  int len = 0;
  wire::PageTag tag;
  static_assert(wire::kPageTagSize == 16, "GCM tags are at most 16 bytes");
  // Only the nonce changes: the key schedule set up in Create() stays.
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_EncryptUpdate(ctx, nullptr, &len, page, static_cast<int>(kPageSize)) != 1 ||
      EVP_EncryptFinal_ex(ctx, tag.data(), &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag.size()), tag.data()) !=
          1) {
    return Err(OpenSslError(fmt::format("cannot tag the page of reference {}", seq)));
  }
  return tag;
}

bool PageTagger::Verify(std::uint64_t seq, const std::uint8_t* page, const wire::PageTag& tag) {
  auto mine = Tag(seq, page);
  return mine.has_value() && CRYPTO_memcmp(mine->data(), tag.data(), tag.size()) == 0;
}

}  // namespace escdr::migrate_internal
