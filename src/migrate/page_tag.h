// PageTagger: the keyed page check of wire protocol version 3
// (docs/wire-protocol.md §6, docs/security.md §4). Internal to migrate/.
//
// The destination draws a random 16-byte key per migration (NewDonorKey) and
// sends it in Availability. For every reference the source tags ITS OWN page
// under that key, and the destination writes a donor copy only if the copy
// has the same tag. The tag is GMAC (NIST SP 800-38D: AES-128-GCM with the
// page as additional data and no plaintext), 16 bytes, with the reference's
// sequence number as the 96-bit nonce (u64 little-endian, then 4 zero bytes):
// each nonce is used once per key. A donor guest never sees the key, so it
// cannot make a page of other content with the same tag, however it crafts
// XXH3-128 collisions with the catalog.
//
// Thread safety: a PageTagger holds one OpenSSL cipher context; one thread
// at a time. Moves, does not copy.
#ifndef ESCDR_MIGRATE_PAGE_TAG_H_
#define ESCDR_MIGRATE_PAGE_TAG_H_

#include <cstdint>
#include <memory>

#include "escdr/base/status.h"
#include "escdr/wire/messages.h"

namespace escdr::migrate_internal {

// A fresh random key from OpenSSL's CSPRNG. Internal if it has no entropy.
Result<wire::DonorKey> NewDonorKey();

class PageTagger {
 public:
  // Errors: Internal if OpenSSL cannot set up AES-128-GCM.
  static Result<PageTagger> Create(const wire::DonorKey& key);

  // The tag of the kPageSize bytes at `page` for reference `seq`.
  // Errors: Internal if OpenSSL fails (it does not on valid input).
  Result<wire::PageTag> Tag(std::uint64_t seq, const std::uint8_t* page);
  // True iff Tag(seq, page) succeeds and equals `tag` (compared in constant time).
  bool Verify(std::uint64_t seq, const std::uint8_t* page, const wire::PageTag& tag);

 private:
  struct CtxFree {
    void operator()(void* ctx) const;
  };
  explicit PageTagger(std::unique_ptr<void, CtxFree> ctx) : ctx_(std::move(ctx)) {}
  std::unique_ptr<void, CtxFree> ctx_;  // EVP_CIPHER_CTX
};

}  // namespace escdr::migrate_internal

#endif  // ESCDR_MIGRATE_PAGE_TAG_H_
