// Tokenizers through the C API, as a C caller uses them, on a SentencePiece model spm_train
// trains here (ids against the Python package: tests/tokenizer/sentencepiece_tokenizer_test.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = {
      "Hello world", "", "  spaces   and\ttabs\n", "Caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5\xe6\x9c\xac",
      "int x = 42; // code", "The quick brown fox jumps over the lazy dog."};
  return t;
}

// A byte-fallback BPE model with an identity normalizer (so decode(encode(x)) == x), trained once.
const std::string& model_path() {
  static const std::string path = [] {
    const std::string dir = olm_testing::temp_dir("capi_tok");
    std::string corpus;
    for (const char* name : {"computers", "science"}) {
      std::ifstream in(std::string("/usr/share/games/fortunes/") + name, std::ios::binary);
      corpus.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::ofstream(dir + "/corpus.txt", std::ios::binary) << corpus;
    const std::string cmd = "spm_train --input=" + dir + "/corpus.txt --model_prefix=" + dir +
                            "/tok --vocab_size=500 --model_type=bpe --byte_fallback=true "
                            "--normalization_rule_name=identity --remove_extra_whitespaces=false "
                            "--minloglevel=2 >/dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    return dir + "/tok.model";
  }();
  return path;
}

struct Tokenizer {
  olm_tokenizer* tok = nullptr;
  Tokenizer() {
    olm_error* err = olm_tokenizer_load(model_path().c_str(), &tok);
    EXPECT_EQ(err, nullptr) << olm_error_message(err);
    olm_error_free(err);
  }
  ~Tokenizer() { olm_tokenizer_free(tok); }
};

std::vector<int32_t> ids_of(const olm_tensor* t) {
  olm_dtype dtype = -1;
  EXPECT_EQ(olm_tensor_dtype(t, &dtype), nullptr);
  EXPECT_EQ(dtype, OLM_DTYPE_INT32);
  size_t nbytes = 0;
  EXPECT_EQ(olm_tensor_nbytes(t, &nbytes), nullptr);
  std::vector<int32_t> ids(nbytes / 4);
  EXPECT_EQ(olm_tensor_copy_to_host(t, ids.data(), nbytes), nullptr);
  return ids;
}

std::vector<int32_t> encode(const olm_tokenizer* tok, const std::string& text, int32_t add_special) {
  olm_tensor* t = nullptr;
  olm_error* err = olm_tokenizer_encode(tok, text.data(), text.size(), add_special, &t);
  EXPECT_EQ(err, nullptr) << olm_error_message(err);
  olm_error_free(err);
  auto ids = ids_of(t);
  olm_tensor_free(t);
  return ids;
}

std::string decode(const olm_tokenizer* tok, const std::vector<int32_t>& ids, int32_t skip_special) {
  olm_buffer* buf = nullptr;
  olm_error* err = olm_tokenizer_decode(tok, ids.data(), ids.size(), skip_special, &buf);
  EXPECT_EQ(err, nullptr) << olm_error_message(err);
  olm_error_free(err);
  std::string text(reinterpret_cast<const char*>(olm_buffer_data(buf)), olm_buffer_size(buf));
  EXPECT_EQ(olm_buffer_data(buf)[olm_buffer_size(buf)], 0);  // NUL-terminated too
  olm_buffer_free(buf);
  return text;
}

TEST(CapiTokenizer, EncodeDecodeRoundTripAndSpecialTokens) {
  Tokenizer t;
  for (const auto& text : texts()) {
    const auto ids = encode(t.tok, text, 0);
    EXPECT_EQ(ids.empty(), text.empty());
    EXPECT_EQ(decode(t.tok, ids, 0), text);
    const auto with = encode(t.tok, text, 1);
    ASSERT_EQ(with.size(), ids.size() + 1);
    EXPECT_EQ(with[0], 1);  // <s>
    EXPECT_EQ(decode(t.tok, with, 1), text);
    EXPECT_EQ(decode(t.tok, with, 0), "<s>" + text);
  }
  // A NUL byte is text like any other.
  const std::string nul("a\0b", 3);
  EXPECT_EQ(decode(t.tok, encode(t.tok, nul, 0), 0), nul);
}

TEST(CapiTokenizer, EncodeIntoACallersBuffer) {
  Tokenizer t;
  const std::string text = texts()[5];
  const auto want = encode(t.tok, text, 1);
  size_t count = 12345;
  ASSERT_OK(olm_tokenizer_encode_into(t.tok, text.data(), text.size(), 1, nullptr, 0, &count));  // size query
  EXPECT_EQ(count, want.size());
  std::vector<int32_t> buf(want.size() + 3, -7);
  ASSERT_OK(olm_tokenizer_encode_into(t.tok, text.data(), text.size(), 1, buf.data(), buf.size(), &count));
  EXPECT_EQ(count, want.size());
  EXPECT_EQ(std::vector<int32_t>(buf.begin(), buf.begin() + count), want);
  EXPECT_EQ(buf[count], -7);
  // Too small: an error giving the count needed; the buffer and count untouched.
  std::vector<int32_t> small(want.size() - 1, -7);
  count = 12345;
  EXPECT_ERR(olm_tokenizer_encode_into(t.tok, text.data(), text.size(), 1, small.data(), small.size(), &count),
             OLM_ERR_INVALID_ARGUMENT, "the text has " + std::to_string(want.size()) + " ids");
  EXPECT_EQ(count, 12345u);
  for (int32_t v : small) EXPECT_EQ(v, -7);
  EXPECT_ERR(olm_tokenizer_encode_into(t.tok, text.data(), text.size(), 1, nullptr, 4, &count),
             OLM_ERR_INVALID_ARGUMENT, "ids: NULL");
  EXPECT_ERR(olm_tokenizer_encode_into(t.tok, text.data(), text.size(), 1, buf.data(), buf.size(), nullptr),
             OLM_ERR_INVALID_ARGUMENT, "count");
}

TEST(CapiTokenizer, EncodeBatchMatchesOneByOne) {
  Tokenizer t;
  ASSERT_OK(olm_set_num_threads(2));
  // Many texts of very different lengths, so both threads share the work.
  std::vector<std::string> many;
  for (int i = 0; i < 300; ++i) many.push_back(texts()[i % texts().size()] + std::string(i % 37, 'x') + std::to_string(i));
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  for (const auto& s : many) {
    ptrs.push_back(s.data());
    lens.push_back(s.size());
  }
  olm_tensor* ids = nullptr;
  olm_tensor* offsets = nullptr;
  ASSERT_OK(olm_tokenizer_encode_batch(t.tok, ptrs.data(), lens.data(), many.size(), 1, &ids, &offsets));
  const auto all = ids_of(ids);
  olm_dtype dtype = -1;
  ASSERT_OK(olm_tensor_dtype(offsets, &dtype));
  EXPECT_EQ(dtype, OLM_DTYPE_INT64);
  std::vector<int64_t> off(many.size() + 1);
  ASSERT_OK(olm_tensor_copy_to_host(offsets, off.data(), off.size() * 8));
  EXPECT_EQ(off.front(), 0);
  EXPECT_EQ(off.back(), static_cast<int64_t>(all.size()));
  for (size_t i = 0; i < many.size(); ++i)
    EXPECT_EQ(std::vector<int32_t>(all.begin() + off[i], all.begin() + off[i + 1]), encode(t.tok, many[i], 1)) << i;
  olm_tensor_free(ids);
  olm_tensor_free(offsets);
  // No texts: empty ids, offsets {0}.
  ASSERT_OK(olm_tokenizer_encode_batch(t.tok, nullptr, nullptr, 0, 0, &ids, &offsets));
  EXPECT_TRUE(ids_of(ids).empty());
  int64_t zero = -1;
  ASSERT_OK(olm_tensor_copy_to_host(offsets, &zero, 8));
  EXPECT_EQ(zero, 0);
  olm_tensor_free(ids);
  olm_tensor_free(offsets);
  // A bad text names its index; nothing is created.
  const char* bad[] = {"fine", "no\xff", nullptr};
  const size_t bad_lens[] = {4, 3, 0};
  ids = offsets = nullptr;
  EXPECT_ERR(olm_tokenizer_encode_batch(t.tok, bad, bad_lens, 3, 0, &ids, &offsets), OLM_ERR_INVALID_ARGUMENT,
             "texts[1]: not UTF-8 at byte offset 2");
  EXPECT_EQ(ids, nullptr);
  EXPECT_EQ(offsets, nullptr);
  const size_t null_lens[] = {4, 2, 5};
  EXPECT_ERR(olm_tokenizer_encode_batch(t.tok, bad, null_lens, 3, 0, &ids, &offsets), OLM_ERR_INVALID_ARGUMENT,
             "texts[2]: NULL with a length of 5 bytes");
  EXPECT_ERR(olm_tokenizer_encode_batch(t.tok, nullptr, bad_lens, 2, 0, &ids, &offsets), OLM_ERR_INVALID_ARGUMENT,
             "texts: NULL");
  EXPECT_ERR(olm_tokenizer_encode_batch(t.tok, bad, nullptr, 2, 0, &ids, &offsets), OLM_ERR_INVALID_ARGUMENT,
             "lengths: NULL");
  EXPECT_ERR(olm_tokenizer_encode_batch(t.tok, bad, bad_lens, 1, 0, nullptr, &offsets), OLM_ERR_INVALID_ARGUMENT,
             "out_ids");
}

TEST(CapiTokenizer, ConcurrentEncodesOnOneHandle) {
  Tokenizer t;
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts()) want.push_back(encode(t.tok, s, 1));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int round = 0; round < 200; ++round)
        for (size_t i = 0; i < texts().size(); ++i) {
          const auto& s = texts()[(i + k) % texts().size()];
          int32_t buf[256];
          size_t count = 0;
          olm_error* err = olm_tokenizer_encode_into(t.tok, s.data(), s.size(), 1, buf, 256, &count);
          if (err || std::vector<int32_t>(buf, buf + count) != want[(i + k) % texts().size()]) ++mismatches[k];
          olm_error_free(err);
        }
    });
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(CapiTokenizer, LookupsVocabularyAndSpecialIds) {
  Tokenizer t;
  int64_t size = 0;
  ASSERT_OK(olm_tokenizer_vocab_size(t.tok, &size));
  EXPECT_EQ(size, 500);
  int32_t id = 0;
  ASSERT_OK(olm_tokenizer_token_to_id(t.tok, "</s>", 4, &id));
  EXPECT_EQ(id, 2);
  ASSERT_OK(olm_tokenizer_token_to_id(t.tok, "no such token", 13, &id));
  EXPECT_EQ(id, -1);
  olm_buffer* buf = nullptr;
  ASSERT_OK(olm_tokenizer_id_to_token(t.tok, 0, &buf));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(olm_buffer_data(buf))), "<unk>");
  olm_buffer_free(buf);
  for (int32_t i = 0; i < size; ++i) {
    ASSERT_OK(olm_tokenizer_id_to_token(t.tok, i, &buf));
    int32_t back = -1;
    ASSERT_OK(olm_tokenizer_token_to_id(t.tok, reinterpret_cast<const char*>(olm_buffer_data(buf)),
                                        olm_buffer_size(buf), &back));
    EXPECT_EQ(back, i);
    olm_buffer_free(buf);
  }
  buf = nullptr;
  EXPECT_ERR(olm_tokenizer_id_to_token(t.tok, 500, &buf), OLM_ERR_INVALID_ARGUMENT, "id: 500 is not a token");
  EXPECT_ERR(olm_tokenizer_id_to_token(t.tok, -1, &buf), OLM_ERR_INVALID_ARGUMENT, "id: -1");
  EXPECT_EQ(buf, nullptr);
  olm_special_ids special;
  special.struct_size = sizeof special;
  ASSERT_OK(olm_tokenizer_special_ids(t.tok, &special));
  EXPECT_EQ(special.unk_id, 0);
  EXPECT_EQ(special.bos_id, 1);
  EXPECT_EQ(special.eos_id, 2);
  EXPECT_EQ(special.pad_id, -1);  // spm_train's default: no <pad>
  // An older caller's smaller struct: only the fields that fit are written.
  olm_special_ids older;
  std::memset(&older, 0x5A, sizeof older);
  older.struct_size = offsetof(olm_special_ids, eos_id) + sizeof(int32_t);
  ASSERT_OK(olm_tokenizer_special_ids(t.tok, &older));
  EXPECT_EQ(older.eos_id, 2);
  EXPECT_EQ(older.pad_id, 0x5A5A5A5A);
  special.struct_size = 0;
  EXPECT_ERR(olm_tokenizer_special_ids(t.tok, &special), OLM_ERR_INVALID_ARGUMENT, "out->struct_size");
}

TEST(CapiTokenizer, BadArgumentsAreErrorsNamingThem) {
  Tokenizer t;
  olm_tensor* out = nullptr;
  EXPECT_ERR(olm_tokenizer_encode(nullptr, "a", 1, 0, &out), OLM_ERR_INVALID_ARGUMENT, "tokenizer: NULL");
  EXPECT_ERR(olm_tokenizer_encode(t.tok, nullptr, 3, 0, &out), OLM_ERR_INVALID_ARGUMENT,
             "text: NULL with a length of 3 bytes");
  EXPECT_ERR(olm_tokenizer_encode(t.tok, "a", 1, 0, nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  // Not UTF-8: a stray continuation byte, a truncated sequence, an overlong form, a surrogate.
  EXPECT_ERR(olm_tokenizer_encode(t.tok, "ab\x80", 3, 0, &out), OLM_ERR_INVALID_ARGUMENT,
             "text: not UTF-8 at byte offset 2");
  EXPECT_ERR(olm_tokenizer_encode(t.tok, "abcd\xe6\x97", 6, 0, &out), OLM_ERR_INVALID_ARGUMENT, "byte offset 4");
  EXPECT_ERR(olm_tokenizer_encode(t.tok, "\xc0\xaf", 2, 0, &out), OLM_ERR_INVALID_ARGUMENT, "byte offset 0");
  EXPECT_ERR(olm_tokenizer_encode(t.tok, "x\xed\xa0\x80", 4, 0, &out), OLM_ERR_INVALID_ARGUMENT, "byte offset 1");
  EXPECT_EQ(out, nullptr);
  ASSERT_OK(olm_tokenizer_encode(t.tok, nullptr, 0, 0, &out));  // NULL with length 0 is the empty text
  EXPECT_TRUE(ids_of(out).empty());
  olm_tensor_free(out);
  const int32_t ids[] = {5, 6, 500};
  olm_buffer* buf = nullptr;
  EXPECT_ERR(olm_tokenizer_decode(t.tok, ids, 3, 0, &buf), OLM_ERR_INVALID_ARGUMENT, "ids[2]: 500 is outside");
  EXPECT_ERR(olm_tokenizer_decode(t.tok, nullptr, 2, 0, &buf), OLM_ERR_INVALID_ARGUMENT, "ids: NULL");
  EXPECT_ERR(olm_tokenizer_decode(t.tok, ids, 2, 0, nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  EXPECT_EQ(buf, nullptr);
  ASSERT_OK(olm_tokenizer_decode(t.tok, nullptr, 0, 0, &buf));
  EXPECT_EQ(olm_buffer_size(buf), 0u);
  olm_buffer_free(buf);
  int32_t id = 0;
  EXPECT_ERR(olm_tokenizer_token_to_id(t.tok, nullptr, 2, &id), OLM_ERR_INVALID_ARGUMENT, "token: NULL");
  int64_t size = 0;
  EXPECT_ERR(olm_tokenizer_vocab_size(nullptr, &size), OLM_ERR_INVALID_ARGUMENT, "tokenizer");
  EXPECT_ERR(olm_tokenizer_special_ids(t.tok, nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  olm_tokenizer_free(nullptr);
}

// A Hugging Face model directory, tests/tokenizer/fixtures/bpe_template (its README has the
// ids, the `tokenizers` package's); tests/parity/tokenizer_parity.py compares the engine with
// the package on 3 MB of text.
TEST(CapiTokenizer, HuggingFaceDirectoryThroughTheSameCalls) {
  const std::string dir = std::string(OLM_TEST_FIXTURES) + "/bpe_template";
  olm_tokenizer* tok = nullptr;
  ASSERT_EQ(olm_tokenizer_load(dir.c_str(), &tok), nullptr);
  EXPECT_EQ(encode(tok, "abc ab", 1), (std::vector<int32_t>{5, 4, 3}));
  EXPECT_EQ(encode(tok, "abc ab", 0), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(encode(tok, "abc ab</s>", 1), (std::vector<int32_t>{5, 4, 3, 6}));
  EXPECT_EQ(encode(tok, "ca d", 0), (std::vector<int32_t>{2, 0, 7}));
  EXPECT_EQ(encode(tok, "  ab\tc ", 1), (std::vector<int32_t>{5, 3, 2}));
  EXPECT_EQ(decode(tok, {5, 4, 3}, 1), "abc ab");
  EXPECT_EQ(decode(tok, {5, 4, 3}, 0), "<s> abc ab");
  int64_t vocab = 0;
  ASSERT_EQ(olm_tokenizer_vocab_size(tok, &vocab), nullptr);
  EXPECT_EQ(vocab, 8);
  int32_t id = -2;
  ASSERT_EQ(olm_tokenizer_token_to_id(tok, "abc", 3, &id), nullptr);
  EXPECT_EQ(id, 4);
  olm_special_ids special{};
  special.struct_size = sizeof special;
  ASSERT_EQ(olm_tokenizer_special_ids(tok, &special), nullptr);
  EXPECT_EQ(special.bos_id, 5);
  EXPECT_EQ(special.eos_id, 6);
  EXPECT_EQ(special.pad_id, -1);
  olm_tokenizer_free(tok);
}

TEST(CapiTokenizer, LoadErrorsNameThePath) {
  olm_tokenizer* tok = nullptr;
  EXPECT_ERR(olm_tokenizer_load(nullptr, &tok), OLM_ERR_INVALID_ARGUMENT, "path");
  EXPECT_ERR(olm_tokenizer_load(model_path().c_str(), nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  EXPECT_ERR(olm_tokenizer_load("/nonexistent/tokenizer.model", &tok), OLM_ERR_IO, "/nonexistent/tokenizer.model");
  const std::string dir = olm_testing::temp_dir("capi_tok_bad");
  std::ofstream(dir + "/tokenizer.model") << "not a model";
  EXPECT_ERR(olm_tokenizer_load(dir.c_str(), &tok), OLM_ERR_PARSE, dir + "/tokenizer.model");
  std::ofstream(dir + "/tokenizer.json") << "{\"model\": {";
  EXPECT_ERR(olm_tokenizer_load(dir.c_str(), &tok), OLM_ERR_PARSE, dir + "/tokenizer.json");
  EXPECT_EQ(tok, nullptr);
}

}  // namespace
