// Cost of the keyed page check of wire protocol version 3 (docs/wire-protocol.md
// §6, §11): CPU time per 4 KiB page of the tag the source computes for each
// elided page and the destination for each donor copy, next to the XXH3-128
// page hash both sides already compute, and to the keyed functions that were
// considered instead (SipHash-2-4, HMAC-SHA256, BLAKE2b-MAC, via OpenSSL's
// EVP_MAC). 64 random pages, in cache: the hash functions alone, not memory.
//
// Run: build-dir/bench/page_tag_bench   (Google Benchmark reports CPU time
// per iteration = per page; read the "CPU" column, it is what the proxy's
// threads spend.)
#include <benchmark/benchmark.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "escdr/page/page.h"
#include "migrate/page_tag.h"

namespace escdr {
namespace {

constexpr std::size_t kPages = 64;

const std::vector<std::uint8_t>& Pages() {
  static const std::vector<std::uint8_t>* pages = [] {
    auto* v = new std::vector<std::uint8_t>(kPages * kPageSize);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (auto& b : *v) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b = static_cast<std::uint8_t>(x);
    }
    return v;
  }();
  return *pages;
}

const std::uint8_t* PageAt(std::size_t i) { return Pages().data() + (i % kPages) * kPageSize; }

void BM_Xxh3Page(benchmark::State& state) {
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(HashPage(PageAt(i++)));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPageSize));
}
BENCHMARK(BM_Xxh3Page);

void BM_GmacTag(benchmark::State& state) {
  auto key = migrate_internal::NewDonorKey();
  auto tagger = migrate_internal::PageTagger::Create(key.value());
  if (!tagger.has_value()) {
    state.SkipWithError(tagger.error().message().c_str());
    return;
  }
  std::uint64_t seq = 0;
  for (auto _ : state) {
    auto tag = tagger->Tag(seq, PageAt(seq));
    benchmark::DoNotOptimize(tag);
    ++seq;
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPageSize));
}
BENCHMARK(BM_GmacTag);

void BM_GmacVerify(benchmark::State& state) {
  auto key = migrate_internal::NewDonorKey();
  auto tagger = migrate_internal::PageTagger::Create(key.value());
  if (!tagger.has_value()) {
    state.SkipWithError(tagger.error().message().c_str());
    return;
  }
  const wire::PageTag tag = tagger->Tag(0, PageAt(0)).value();
  for (auto _ : state) benchmark::DoNotOptimize(tagger->Verify(0, PageAt(0), tag));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPageSize));
}
BENCHMARK(BM_GmacVerify);

// An EVP_MAC over each page, re-initialised per page as a per-reference tag
// would be. `name` and its parameters as OpenSSL 3 spells them.
void EvpMac(benchmark::State& state, const char* name, OSSL_PARAM* params) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, name, nullptr);
  EVP_MAC_CTX* ctx = mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr;
  const std::uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  if (ctx == nullptr || EVP_MAC_init(ctx, key, sizeof(key), params) != 1) {
    state.SkipWithError("OpenSSL lacks this MAC");
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return;
  }
  std::size_t i = 0;
  std::uint8_t out[64];
  for (auto _ : state) {
    std::size_t len = 0;
    if (EVP_MAC_init(ctx, key, sizeof(key), params) != 1 ||
        EVP_MAC_update(ctx, PageAt(i++), kPageSize) != 1 ||
        EVP_MAC_final(ctx, out, &len, sizeof(out)) != 1) {
      state.SkipWithError("EVP_MAC failed");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kPageSize));
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
}

void BM_SipHash24(benchmark::State& state) {
  std::size_t size = 16;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                         OSSL_PARAM_construct_end()};
  EvpMac(state, "SIPHASH", params);
}
BENCHMARK(BM_SipHash24);

void BM_HmacSha256(benchmark::State& state) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  EvpMac(state, "HMAC", params);
}
BENCHMARK(BM_HmacSha256);

void BM_Blake2bMac128(benchmark::State& state) {
  std::size_t size = 16;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                         OSSL_PARAM_construct_end()};
  EvpMac(state, "BLAKE2BMAC", params);
}
BENCHMARK(BM_Blake2bMac128);

}  // namespace
}  // namespace escdr

BENCHMARK_MAIN();
