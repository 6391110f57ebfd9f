// capi/capi_config.cpp: configs through the ABI: JSON, presets and FlatBuffers, one validation
// whichever door, JSON that reads back, errors that name the path and what was expected.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;
using namespace olm_testing;

namespace {

TEST(CapiConfig, JsonPresetsRoundTripsAndBadInput) {
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_preset("olmo2_30M", 16384, &cfg));
  int64_t total = 0, non_emb = 0, flops = 0;
  ASSERT_OK(olm_config_num_params(cfg, &total, &non_emb));
  EXPECT_EQ(total, 11800832);  // OLMo-core's count
  EXPECT_EQ(non_emb, 7606528);
  ASSERT_OK(olm_config_num_params(cfg, nullptr, nullptr));
  ASSERT_OK(olm_config_num_flops_per_token(cfg, 256, &flops));
  EXPECT_EQ(flops, 47205888);  // OLMo-core's Transformer.num_flops_per_token(256)
  expect(olm_config_num_flops_per_token(cfg, 0, &flops), OLM_ERR_INVALID_ARGUMENT, "seq_len");
  expect(olm_config_num_flops_per_token(cfg, 5, nullptr), OLM_ERR_INVALID_ARGUMENT, "flops: NULL");
  // JSON -> config -> JSON -> config -> JSON is stable; FlatBuffers byte-identical.
  olm_buffer* json = nullptr;
  ASSERT_OK(olm_config_to_json(cfg, &json));
  const std::string text(reinterpret_cast<const char*>(olm_buffer_data(json)), olm_buffer_size(json));
  EXPECT_EQ(olm_buffer_data(json)[olm_buffer_size(json)], 0) << "JSON buffers are NUL-terminated";
  olm_config* again = nullptr;
  ASSERT_OK(olm_config_from_json(text.data(), text.size(), &again));
  olm_buffer* json2 = nullptr;
  ASSERT_OK(olm_config_to_json(again, &json2));
  EXPECT_EQ(text, std::string(reinterpret_cast<const char*>(olm_buffer_data(json2)), olm_buffer_size(json2)));
  olm_buffer *fb = nullptr, *fb2 = nullptr;
  ASSERT_OK(olm_config_to_flatbuffer(cfg, &fb));
  olm_config* from_fb = nullptr;
  ASSERT_OK(olm_config_from_flatbuffer(olm_buffer_data(fb), olm_buffer_size(fb), &from_fb));
  ASSERT_OK(olm_config_to_flatbuffer(from_fb, &fb2));
  ASSERT_EQ(olm_buffer_size(fb), olm_buffer_size(fb2));
  EXPECT_EQ(0, std::memcmp(olm_buffer_data(fb), olm_buffer_data(fb2), olm_buffer_size(fb)));

  // Every prefix of a valid buffer fails cleanly or (losing only padding) reads the same.
  const std::vector<uint8_t> bytes(olm_buffer_data(fb), olm_buffer_data(fb) + olm_buffer_size(fb));
  for (size_t n = 0; n < bytes.size(); ++n) {
    olm_config* out = sentinel<olm_config>();
    olm_error* e = olm_config_from_flatbuffer(bytes.data(), n, &out);
    if (e) {
      EXPECT_EQ(olm_error_code(e), OLM_ERR_PARSE) << n;
      EXPECT_EQ(out, sentinel<olm_config>());
      olm_error_free(e);
    } else {
      olm_config_free(out);
    }
  }
  // Seeded garbage never crashes.
  uint64_t state = 99;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> junk(16 + trial % 200);
    for (auto& b : junk) {
      state = state * 6364136223846793005ull + 1;
      b = static_cast<uint8_t>(state >> 56);
    }
    if (trial % 2) std::memcpy(junk.data() + 4, "OLMC", 4);
    olm_config* out = nullptr;
    olm_error* e = olm_config_from_flatbuffer(junk.data(), junk.size(), &out);
    if (e) {
      EXPECT_TRUE(olm_error_code(e) == OLM_ERR_PARSE || olm_error_code(e) == OLM_ERR_INVALID_CONFIG);
      olm_error_free(e);
    }
    olm_config_free(out);
  }
  auto wrong_id = bytes;
  std::memcpy(wrong_id.data() + 4, "NOPE", 4);
  expect(olm_config_from_flatbuffer(wrong_id.data(), wrong_id.size(), &cfg), OLM_ERR_PARSE, "file identifier");
  expect(olm_config_from_flatbuffer(bytes.data(), 0, &cfg), OLM_ERR_PARSE, "too short");

  olm_config* bad = sentinel<olm_config>();
  expect(olm_config_from_preset("gpt5", 100, &bad), OLM_ERR_INVALID_ARGUMENT, "known: ");
  expect(olm_config_from_preset("olmo2_1M", 0, &bad), OLM_ERR_INVALID_ARGUMENT, "vocab_size");
  const std::string tiny = kTiny;
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string s = tiny;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  struct Case {
    std::string json;
    int32_t code;
    std::string needle;
  };
  for (const auto& c : std::vector<Case>{
           {"{", OLM_ERR_PARSE, "config JSON"},
           {edited("\"n_layers\": 2", "\"n_layers\": 2, \"surprise\": true"), OLM_ERR_PARSE, "unknown field 'surprise' in model config"},
           {edited("\"d_model\": 64", "\"d_model\": \"wide\""), OLM_ERR_PARSE, "field 'd_model'"},
           {edited("\"d_model\": 64", "\"d_model\": 1e40"), OLM_ERR_PARSE, "d_model"},
           {R"({"d_model": 64, "vocab_size": 10, "n_layers": 1})", OLM_ERR_PARSE, "field 'lm_head' is required but missing"},
           {R"({"d_model": 64, "vocab_size": 10, "n_layers": 1, "lm_head": {}})", OLM_ERR_INVALID_CONFIG, "block: required field is missing"},
           {edited("\"d_model\": 64", "\"d_model\": 63"), OLM_ERR_INVALID_CONFIG, "d_model (63) must be divisible"},
           {edited("\"n_heads\": 4", "\"n_heads\": 4, \"n_kv_heads\": 3"), OLM_ERR_INVALID_CONFIG, "n_kv_heads (3)"},
           {edited("\"n_layers\": 2", "\"n_layers\": 0"), OLM_ERR_INVALID_CONFIG, "n_layers must be positive"},
           {edited("\"reordered_norm\"", "\"upside_down\""), OLM_ERR_INVALID_CONFIG, "block.name"},
           {edited("\"hidden_size\": 192", "\"hidden_size\": 192, \"activation\": \"relu6\""), OLM_ERR_INVALID_CONFIG, "activation"},
           {edited("\"n_layers\": 2", "\"n_layers\": 2, \"dtype\": \"int4\""), OLM_ERR_INVALID_CONFIG, "dtype"},
       }) {
    olm_config* out = sentinel<olm_config>();
    expect(olm_config_from_json(c.json.data(), c.json.size(), &out), c.code, c.needle);
    EXPECT_EQ(out, sentinel<olm_config>());
  }
  for (auto* b : {json, json2, fb, fb2}) olm_buffer_free(b);
  for (auto* c : {cfg, again, from_fb}) olm_config_free(c);
}

// A buffer from olm_config_to_flatbuffer with one string's bytes replaced in place.
std::vector<uint8_t> config_buffer_with(const std::string& json, const std::string& from, const std::string& to) {
  olm_config* cfg = nullptr;
  olm_buffer* fb = nullptr;
  EXPECT_EQ(olm_config_from_json(json.data(), json.size(), &cfg), nullptr);
  EXPECT_EQ(olm_config_to_flatbuffer(cfg, &fb), nullptr);
  const auto* data = olm_buffer_data(fb);
  std::vector<uint8_t> bytes(data, data + olm_buffer_size(fb));
  olm_buffer_free(fb);
  olm_config_free(cfg);
  const auto at = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  EXPECT_NE(at, bytes.end()) << from;
  EXPECT_EQ(from.size(), to.size());
  if (at != bytes.end()) std::copy(to.begin(), to.end(), at);
  return bytes;
}

TEST(CapiConfigDoors, InvalidUtf8InABufferIsRefusedNamingTheField) {
  const std::string json = std::string(kTiny).replace(std::string(kTiny).find("\"n_layers\": 2"), 13,
                                                      "\"n_layers\": 2, \"freeze_params\": [\"zzzz\"]");
  const auto bad = config_buffer_with(json, "zzzz", "z\xff\xfez");
  olm_config* cfg = sentinel<olm_config>();
  expect(olm_config_from_flatbuffer(bad.data(), bad.size(), &cfg), OLM_ERR_INVALID_CONFIG,
         "freeze_params[0]: not valid UTF-8 (byte 0xFF at offset 1)");
  EXPECT_EQ(cfg, sentinel<olm_config>());
  // A train config's strings, and its model's, alike.
  const std::string train = R"({"sequence_length": 8, "global_batch_size": 16, "save_folder": "abcd"})";
  olm_train_config* tcfg = nullptr;
  olm_buffer* fb = nullptr;
  ASSERT_OK(olm_train_config_from_json(train.data(), train.size(), &tcfg));
  ASSERT_OK(olm_train_config_to_flatbuffer(tcfg, &fb));
  const auto* data = olm_buffer_data(fb);
  std::vector<uint8_t> bytes(data, data + olm_buffer_size(fb));
  olm_buffer_free(fb);
  olm_train_config_free(tcfg);
  const std::string abcd = "abcd";
  std::copy_n("ab\x80" "d", 4, std::search(bytes.begin(), bytes.end(), abcd.begin(), abcd.end()));
  olm_train_config* bad_train = sentinel<olm_train_config>();
  expect(olm_train_config_from_flatbuffer(bytes.data(), bytes.size(), &bad_train), OLM_ERR_INVALID_CONFIG,
         "save_folder: not valid UTF-8 (byte 0x80 at offset 2)");
  EXPECT_EQ(bad_train, sentinel<olm_train_config>());
}

TEST(CapiConfigDoors, JsonOfAnAcceptedConfigReadsBack) {
  // eps 1e-17 was written with 12 decimals ("0.0") and the text was then refused.
  const std::string json = std::string(kTiny).replace(std::string(kTiny).find("1e-6"), 4, "1e-17");
  olm_config* cfg = nullptr;
  olm_buffer* text = nullptr;
  ASSERT_OK(olm_config_from_json(json.data(), json.size(), &cfg));
  ASSERT_OK(olm_config_to_json(cfg, &text));
  const std::string written(reinterpret_cast<const char*>(olm_buffer_data(text)), olm_buffer_size(text));
  EXPECT_THAT(written, HasSubstr("\"eps\": 1e-17"));
  olm_config* again = nullptr;
  ASSERT_OK(olm_config_from_json(written.data(), written.size(), &again));
  olm_buffer* fb1 = nullptr;
  olm_buffer* fb2 = nullptr;
  ASSERT_OK(olm_config_to_flatbuffer(cfg, &fb1));
  ASSERT_OK(olm_config_to_flatbuffer(again, &fb2));
  ASSERT_EQ(olm_buffer_size(fb1), olm_buffer_size(fb2));
  EXPECT_EQ(0, std::memcmp(olm_buffer_data(fb1), olm_buffer_data(fb2), olm_buffer_size(fb1)));
  const std::string train = R"({"sequence_length": 8, "global_batch_size": 16, "optimizer": {"eps": 1e-17},
      "z_loss_multiplier": 0})";
  olm_train_config* tcfg = nullptr;
  olm_buffer* ttext = nullptr;
  ASSERT_OK(olm_train_config_from_json(train.data(), train.size(), &tcfg));
  ASSERT_OK(olm_train_config_to_json(tcfg, &ttext));
  const std::string twritten(reinterpret_cast<const char*>(olm_buffer_data(ttext)), olm_buffer_size(ttext));
  EXPECT_THAT(twritten, HasSubstr("\"eps\": 1e-17"));
  olm_train_config* tagain = nullptr;
  ASSERT_OK(olm_train_config_from_json(twritten.data(), twritten.size(), &tagain));
  for (auto* b : {text, fb1, fb2, ttext}) olm_buffer_free(b);
  for (auto* c : {cfg, again}) olm_config_free(c);
  for (auto* c : {tcfg, tagain}) olm_train_config_free(c);
}

TEST(CapiConfigDoors, FlopsOverflowNamesSeqLen) {
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_preset("llama3_405B", 128256, &cfg));
  int64_t flops = -7;
  expect(olm_config_num_flops_per_token(cfg, int64_t{1} << 42, &flops), OLM_ERR_INVALID_ARGUMENT,
         "seq_len (4398046511104) is too large");
  EXPECT_EQ(flops, -7) << "out parameters stay untouched on error";
  ASSERT_OK(olm_config_num_flops_per_token(cfg, 8192, &flops));
  EXPECT_GT(flops, 0);
  olm_config_free(cfg);
}

TEST(CapiConfigErrors, NameThePathTheExpectationAndTheNearestField) {
  struct Case {
    std::string json;
    int32_t code;
    std::string needle;
  };
  const std::string head = R"({"sequence_length": 8, "global_batch_size": 16, )";
  for (const auto& c : std::vector<Case>{
           {head + R"("max_step": 3})", OLM_ERR_PARSE,
            "train config JSON, line 1, column 49: unknown field 'max_step' in train config; did you mean 'max_steps'?"},
           {head + R"("optimizer": {"lr": "x"}})", OLM_ERR_PARSE,
            "field 'optimizer.lr': expected a number, not the string \"x\""},
           {head + R"("max_steps": 0.5})", OLM_ERR_PARSE, "field 'max_steps': expected an integer, not 0.5"},
           {head + R"("model_preset": "olmo2_3M", "model_vocab_size": 10})", OLM_ERR_INVALID_CONFIG,
            "model_preset: unknown preset 'olmo2_3M'"},
       }) {
    olm_train_config* out = sentinel<olm_train_config>();
    expect(olm_train_config_from_json(c.json.data(), c.json.size(), &out), c.code, c.needle);
    EXPECT_EQ(out, sentinel<olm_train_config>());
  }
  // The C call's own argument is `name`; inside a train config it is model_preset.
  olm_config* cfg = sentinel<olm_config>();
  expect(olm_config_from_preset("olmo2_3M", 10, &cfg), OLM_ERR_INVALID_ARGUMENT, "name: unknown preset 'olmo2_3M'");
}

// ---- Issue #12: bad input at the C boundary never gets an internal error ----

}  // namespace
