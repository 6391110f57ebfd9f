// tokenizer.json parity with the `tokenizers` package, on fixtures that
// tests/parity/tokenizer_parity.py writes (OLM_TOKENIZER_PARITY_DIR): for every document, the
// ids with and without special tokens and both decodes must be identical, and where olm calls
// a tokenizer lossless, decode(encode(x)) == x. Also prints olm's single-thread encode
// throughput beside the package's.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/json.h"
#include "core/tokenizer/tokenizer.h"

namespace olm::tokenizer {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct Document {
  std::string text;
  std::vector<int32_t> ids, ids_special;
  std::string decoded, decoded_skip;
};

// The fixture: u32 count, then per document its text, ids, ids with special tokens, decode and
// decode skipping special tokens, each as u32 length + data (little-endian).
std::vector<Document> read_fixture(const std::string& path) {
  const std::string data = read_file(path);
  size_t at = 0;
  auto u32 = [&] {
    if (at + 4 > data.size()) throw std::runtime_error(path + ": truncated");
    uint32_t v;
    std::memcpy(&v, data.data() + at, 4);
    at += 4;
    return v;
  };
  auto bytes = [&] {
    const uint32_t n = u32();
    if (at + n > data.size()) throw std::runtime_error(path + ": truncated");
    std::string s = data.substr(at, n);
    at += n;
    return s;
  };
  auto ids = [&] {
    const uint32_t n = u32();
    if (at + 4ull * n > data.size()) throw std::runtime_error(path + ": truncated");
    std::vector<int32_t> v(n);
    if (n) std::memcpy(v.data(), data.data() + at, 4ull * n);
    at += 4ull * n;
    return v;
  };
  std::vector<Document> docs(u32());
  for (Document& d : docs) {
    d.text = bytes();
    d.ids = ids();
    d.ids_special = ids();
    d.decoded = bytes();
    d.decoded_skip = bytes();
  }
  return docs;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + (ids.size() > 40 ? " ..." : "");
}

TEST(TokenizerParity, MatchesTokenizers) {
  const char* dir = std::getenv("OLM_TOKENIZER_PARITY_DIR");
  if (!dir) GTEST_SKIP() << "OLM_TOKENIZER_PARITY_DIR not set (run by tests/parity/tokenizer_parity.py)";
  const std::string manifest_text = read_file(std::string(dir) + "/manifest.json");
  const io::Json manifest = io::parse_json(manifest_text.data(), manifest_text.size(), "manifest.json");
  ASSERT_FALSE(manifest.array.empty());
  for (const io::Json& entry : manifest.array) {
    std::string kind;
    bool lossless = false;
    double reference_mbps = 0;
    size_t bench_docs = 0;
    for (const auto& [key, value] : entry.object) {
      if (key == "kind") kind = value.string;
      if (key == "lossless") lossless = value.boolean;
      if (key == "tokenizers_mbps") reference_mbps = std::stod(value.number);
      if (key == "bench_docs") bench_docs = static_cast<size_t>(value.integer);
    }
    SCOPED_TRACE(kind);
    const std::string json_path = std::string(dir) + "/" + kind + ".json";
    const std::string json = read_file(json_path);
    const auto load_start = std::chrono::steady_clock::now();
    auto tokenizer = load_hf_tokenizer_json(json, kind + ".json");
    const double load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
    EXPECT_EQ(tokenizer->lossless(), lossless);
    const std::vector<Document> docs = read_fixture(std::string(dir) + "/" + kind + ".bin");
    size_t bytes = 0, mismatches = 0, roundtrips = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
      const Document& d = docs[i];
      bytes += d.text.size();
      const auto ids = tokenizer->encode(d.text, false);
      const auto ids_special = tokenizer->encode(d.text, true);
      const std::string decoded = tokenizer->decode(d.ids_special.data(), d.ids_special.size(), false);
      const std::string decoded_skip = tokenizer->decode(d.ids_special.data(), d.ids_special.size(), true);
      const bool same = ids == d.ids && ids_special == d.ids_special && decoded == d.decoded && decoded_skip == d.decoded_skip;
      if (!same && ++mismatches <= 5) {
        ADD_FAILURE() << kind << " document " << i << ": " << io::quote_json(d.text.substr(0, 300))
                      << "\n  olm        " << show(ids) << "\n  tokenizers " << show(d.ids)
                      << "\n  special olm " << show(ids_special) << "\n  special ref " << show(d.ids_special)
                      << "\n  decode olm " << io::quote_json(decoded.substr(0, 300)) << "\n  decode ref "
                      << io::quote_json(d.decoded.substr(0, 300)) << "\n  skip olm " << io::quote_json(decoded_skip.substr(0, 300))
                      << "\n  skip ref " << io::quote_json(d.decoded_skip.substr(0, 300));
      }
      if (tokenizer->lossless()) {
        const std::string back = tokenizer->decode(ids.data(), ids.size(), false);
        roundtrips += back == d.text;
        EXPECT_EQ(back, d.text) << kind << " document " << i << " does not round-trip";
      }
    }
    EXPECT_EQ(mismatches, 0u);
    // Single-thread throughput on the first megabyte as the script measured tokenizers': a
    // fresh load each time (cold word cache), process CPU time, the best of three.
    double best = 0;
    size_t bench_bytes = 0;
    bench_docs = std::min(bench_docs, docs.size());
    for (size_t i = 0; i < bench_docs; ++i) bench_bytes += docs[i].text.size();
    for (int pass = 0; pass < 3 && bench_docs > 0; ++pass) {
      auto fresh = load_hf_tokenizer_json(json, kind + ".json");
      const std::clock_t start = std::clock();
      size_t count = 0;
      for (size_t i = 0; i < bench_docs; ++i) count += fresh->encode(docs[i].text, false).size();
      const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
      best = std::max(best, bench_bytes / seconds / 1e6);
      EXPECT_GT(count, 0u);
    }
    std::printf("%-10s %zu documents, %zu bytes, %zu mismatches, round trips %zu%s; load %.1f ms; encode "
                "olm %.2f MB/s vs tokenizers %.2f MB/s (single thread, CPU time, %.2fx)\n",
                kind.c_str(), docs.size(), bytes, mismatches, roundtrips, tokenizer->lossless() ? "" : " (not lossless)",
                load_ms, best, reference_mbps, best / reference_mbps);
  }
}

}  // namespace
}  // namespace olm::tokenizer
