// The C ABI as a C caller uses it: every bad input gives an error object with a precise
// message, outputs stay untouched, nothing crashes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

const char* kTiny = R"({"d_model": 64, "vocab_size": 256, "n_layers": 2,
 "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000},
   "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 192, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";

struct Err {
  int32_t code;
  std::string message;
};

// Takes ownership of an error. A NULL error is a test failure here.
Err take(olm_error* e) {
  EXPECT_NE(e, nullptr) << "expected an error";
  Err out{olm_error_code(e), olm_error_message(e)};
  olm_error_free(e);
  return out;
}

void expect(olm_error* e, int32_t code, const std::string& needle) {
  const Err err = take(e);
  EXPECT_EQ(err.code, code) << err.message;
  EXPECT_THAT(err.message, HasSubstr(needle));
}


template <class T>
T* sentinel() {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(0x51));
}


struct Tiny : ::testing::Test {
  olm_config* cfg = nullptr;
  olm_model* model = nullptr;
  void SetUp() override {
    ASSERT_OK(olm_config_from_json(kTiny, std::strlen(kTiny), &cfg));
    ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  }
  void TearDown() override {
    olm_model_free(model);
    olm_config_free(cfg);
  }
  olm_tensor* ids(std::vector<int64_t> v, int64_t rows, int64_t cols) {
    olm_tensor* t = nullptr;
    int64_t shape[2] = {rows, cols};
    olm_error* e = olm_tensor_create(OLM_DTYPE_INT64, shape, 2, v.data(), v.size() * 8, &t);
    EXPECT_EQ(e, nullptr) << olm_error_message(e);
    olm_error_free(e);
    return t;
  }
  std::vector<float> logits(olm_tensor* input, int64_t keep = 0) {
    olm_forward_options o;
    olm_forward_options_init(&o);
    o.logits_to_keep = keep;
    olm_tensor* out = nullptr;
    olm_error* e = olm_model_forward(model, input, &o, &out);
    EXPECT_EQ(e, nullptr) << olm_error_message(e);
    olm_error_free(e);
    size_t n = 0;
    olm_error_free(olm_tensor_nbytes(out, &n));
    std::vector<float> v(n / 4);
    olm_error_free(olm_tensor_copy_to_host(out, v.data(), n));
    olm_tensor_free(out);
    return v;
  }
};

std::vector<int64_t> seq(int64_t n, int64_t mod = 256) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (i * 37 + 11) % mod;
  return v;
}

TEST(CapiBasics, VersionErrorsAndNullReleases) {
  char expected[32];
  std::snprintf(expected, sizeof expected, "%d.%d.%d", OLM_VERSION_MAJOR, OLM_VERSION_MINOR, OLM_VERSION_PATCH);
  EXPECT_STREQ(olm_version(), expected);
  EXPECT_EQ(olm_error_code(nullptr), OLM_OK);
  EXPECT_STREQ(olm_error_message(nullptr), "");
  EXPECT_EQ(olm_buffer_data(nullptr), nullptr);
  EXPECT_EQ(olm_buffer_size(nullptr), 0u);
  olm_error_free(nullptr);
  olm_buffer_free(nullptr);
  olm_config_free(nullptr);
  olm_tensor_free(nullptr);
  olm_model_free(nullptr);
  olm_loss_result_free(nullptr);
  olm_train_config_free(nullptr);
  olm_trainer_free(nullptr);
  olm_dataset_free(nullptr);
  olm_model_options_init_sized(nullptr, sizeof(olm_model_options));
  olm_forward_options_init_sized(nullptr, sizeof(olm_forward_options));
  olm_loss_options_init_sized(nullptr, sizeof(olm_loss_options));
  olm_generate_options_init_sized(nullptr, sizeof(olm_generate_options));
  olm_dataset_options_init_sized(nullptr, sizeof(olm_dataset_options));
  olm_fit_options_init_sized(nullptr, sizeof(olm_fit_options));
  (olm_model_options_init)(nullptr);
  EXPECT_GE(olm_cuda_device_count(), 0);
}

TEST(CapiBasics, NullArgumentsAreNamed) {
  olm_config* cfg = sentinel<olm_config>();
  expect(olm_config_from_preset(nullptr, 10, &cfg), OLM_ERR_INVALID_ARGUMENT, "name: NULL");
  expect(olm_config_from_preset("olmo2_1M", 10, nullptr), OLM_ERR_INVALID_ARGUMENT, "out: NULL");
  expect(olm_config_from_json(nullptr, 3, &cfg), OLM_ERR_INVALID_ARGUMENT, "text: NULL");
  expect(olm_config_from_flatbuffer(nullptr, 3, &cfg), OLM_ERR_INVALID_ARGUMENT, "data: NULL");
  EXPECT_EQ(cfg, sentinel<olm_config>());
  olm_buffer* buf = nullptr;
  expect(olm_config_to_json(nullptr, &buf), OLM_ERR_INVALID_ARGUMENT, "config: NULL");
  expect(olm_config_to_flatbuffer(nullptr, &buf), OLM_ERR_INVALID_ARGUMENT, "config: NULL");
  int64_t n = 0;
  expect(olm_config_num_params(nullptr, &n, &n), OLM_ERR_INVALID_ARGUMENT, "config: NULL");
  expect(olm_config_num_flops_per_token(nullptr, 1, &n), OLM_ERR_INVALID_ARGUMENT, "config: NULL");
  olm_dtype d = 0;
  size_t s = 0;
  expect(olm_tensor_dtype(nullptr, &d), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
  expect(olm_tensor_ndim(nullptr, &s), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
  expect(olm_tensor_shape(nullptr, &n, 1), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
  expect(olm_tensor_nbytes(nullptr, &s), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
  expect(olm_tensor_copy_to_host(nullptr, &n, 8), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
  olm_model* m = sentinel<olm_model>();
  expect(olm_model_create(nullptr, "cpu", nullptr, &m), OLM_ERR_INVALID_ARGUMENT, "config: NULL");
  EXPECT_EQ(m, sentinel<olm_model>());
  olm_tensor* t = nullptr;
  expect(olm_model_forward(nullptr, nullptr, nullptr, &t), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  olm_loss_result r{};
  r.struct_size = sizeof r;
  expect(olm_model_loss(nullptr, nullptr, nullptr, nullptr, &r), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  expect(olm_model_num_params(nullptr, &n), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  expect(olm_model_parameter_count(nullptr, &s), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  olm_parameter_info info{};
  info.struct_size = sizeof info;
  expect(olm_model_parameter_info(nullptr, 0, &info), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  expect(olm_model_load_safetensors(nullptr, "x"), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  expect(olm_model_save_safetensors(nullptr, "x"), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  expect(olm_model_generate(nullptr, nullptr, nullptr, &t), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
}

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

TEST(CapiTensor, EveryDtypeAndEveryMistake) {
  struct Dt {
    olm_dtype dtype;
    size_t size;
  };
  for (auto d : {Dt{OLM_DTYPE_INT32, 4}, Dt{OLM_DTYPE_INT64, 8}, Dt{OLM_DTYPE_FLOAT32, 4}, Dt{OLM_DTYPE_BFLOAT16, 2},
                 Dt{OLM_DTYPE_FLOAT16, 2}}) {
    std::vector<uint8_t> data(6 * d.size);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + 1);
    int64_t shape[2] = {2, 3};
    olm_tensor* t = nullptr;
    ASSERT_OK(olm_tensor_create(d.dtype, shape, 2, data.data(), data.size(), &t));
    olm_dtype got = -1;
    ASSERT_OK(olm_tensor_dtype(t, &got));
    EXPECT_EQ(got, d.dtype);
    size_t ndim = 0, nbytes = 0;
    ASSERT_OK(olm_tensor_ndim(t, &ndim));
    ASSERT_OK(olm_tensor_nbytes(t, &nbytes));
    EXPECT_EQ(ndim, 2u);
    EXPECT_EQ(nbytes, data.size());
    int64_t dims[2] = {0, 0};
    ASSERT_OK(olm_tensor_shape(t, dims, 2));
    EXPECT_EQ(dims[0], 2);
    EXPECT_EQ(dims[1], 3);
    std::vector<uint8_t> back(data.size() + 4, 0xEE);
    ASSERT_OK(olm_tensor_copy_to_host(t, back.data(), back.size()));
    EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin())) << "bytes round trip exactly";
    EXPECT_EQ(back[data.size()], 0xEE) << "nothing written past nbytes";
    std::vector<uint8_t> small(data.size() - 1, 0xAB);
    expect(olm_tensor_copy_to_host(t, small.data(), small.size()), OLM_ERR_INVALID_ARGUMENT, "dst_size");
    EXPECT_EQ(small[0], 0xAB) << "a refused copy writes nothing";
    int64_t one = 0;
    expect(olm_tensor_shape(t, &one, 1), OLM_ERR_INVALID_ARGUMENT, "capacity");
    olm_tensor_free(t);
  }
  int64_t shape[2] = {2, 2}, neg[1] = {-1}, huge[2] = {INT64_MAX / 2, 16}, big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  float data[4] = {1, 2, 3, 4};
  olm_tensor* t = sentinel<olm_tensor>();
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, shape, 2, data, 12, &t), OLM_ERR_INVALID_ARGUMENT, "data_size: 12 bytes given but the dtype and shape need 16");
  expect(olm_tensor_create(42, shape, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "unknown dtype 42");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, neg, 1, data, 0, &t), OLM_ERR_INVALID_ARGUMENT, "shape[0]: negative");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, huge, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "overflows");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, big, 9, data, 4, &t), OLM_ERR_INVALID_ARGUMENT, "OLM_MAX_DIMS");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, nullptr, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "shape: NULL");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, shape, 2, nullptr, 16, &t), OLM_ERR_INVALID_ARGUMENT, "data: NULL");
  EXPECT_EQ(t, sentinel<olm_tensor>());
  // A scalar and an empty tensor are fine.
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, nullptr, 0, data, 4, &t));
  olm_tensor_free(t);
  int64_t empty[1] = {0};
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, empty, 1, nullptr, 0, &t));
  ASSERT_OK(olm_tensor_copy_to_host(t, nullptr, 0));
  olm_tensor_free(t);
}

TEST_F(Tiny, ForwardShapesKeepAndDtypes) {
  auto* x = ids(seq(10), 2, 5);
  auto full = logits(x);
  ASSERT_EQ(full.size(), 2u * 5 * 256);
  for (float v : full) ASSERT_TRUE(std::isfinite(v));
  auto last2 = logits(x, 2);
  ASSERT_EQ(last2.size(), 2u * 2 * 256);
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 2 * 256; ++i)
      // The head's matmul on 2 rows instead of 5 may block the sum differently: float32 ulps.
      EXPECT_NEAR(last2[static_cast<size_t>(b * 512 + i)], full[static_cast<size_t>(b * 5 * 256 + 3 * 256 + i)], 1e-5);
  std::vector<int32_t> v32;
  for (auto v : seq(10)) v32.push_back(static_cast<int32_t>(v));
  int64_t shape[2] = {2, 5};
  olm_tensor* x32 = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT32, shape, 2, v32.data(), v32.size() * 4, &x32));
  EXPECT_EQ(logits(x32), full);

  olm_tensor* out = sentinel<olm_tensor>();
  auto bad = seq(10);
  bad[7] = 256;
  auto* oov = ids(bad, 2, 5);
  expect(olm_model_forward(model, oov, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "input_ids: value 256 is outside the vocabulary");
  bad[7] = -1;
  auto* neg = ids(bad, 2, 5);
  expect(olm_model_forward(model, neg, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "value -1");
  float fdata[2] = {1, 2};
  int64_t fshape[2] = {1, 2};
  olm_tensor* f = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, fshape, 2, fdata, 8, &f));
  expect(olm_model_forward(model, f, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "dtype must be int32 or int64");
  int64_t flat_shape[1] = {10};
  olm_tensor* flat = nullptr;
  auto sv = seq(10);
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, flat_shape, 1, sv.data(), 80, &flat));
  expect(olm_model_forward(model, flat, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "(batch, seq_len)");
  int64_t zero_shape[2] = {0, 5};
  olm_tensor* zero = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, zero_shape, 2, nullptr, 0, &zero));
  expect(olm_model_forward(model, zero, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "positive");
  olm_forward_options o;
  olm_forward_options_init(&o);
  o.logits_to_keep = 6;
  expect(olm_model_forward(model, x, &o, &out), OLM_ERR_INVALID_ARGUMENT, "logits_to_keep");
  o.logits_to_keep = -1;
  expect(olm_model_forward(model, x, &o, &out), OLM_ERR_INVALID_ARGUMENT, "logits_to_keep");
  o.struct_size = 0;
  expect(olm_model_forward(model, x, &o, &out), OLM_ERR_INVALID_ARGUMENT, "options.struct_size");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  for (auto* t : {x, x32, oov, neg, f, flat, zero}) olm_tensor_free(t);
}

// Intra-document masking through the ABI: each document of a packed row gets the logits of a
// forward over it alone (float32 rounding: 1e-5), the loss takes the same option, and a
// caller built before the field existed (a smaller struct_size) gets the unmasked forward.
TEST_F(Tiny, DocumentMaskingMatchesSeparateDocuments) {
  const int64_t T = 6;
  auto tokens = seq(12);
  auto* x = ids(tokens, 2, T);
  const std::vector<int32_t> cu = {0, 2, 6, 9, 12};
  int64_t cu_shape[1] = {5};
  olm_tensor* cu_t = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT32, cu_shape, 1, cu.data(), cu.size() * 4, &cu_t));
  olm_forward_options o;
  olm_forward_options_init(&o);
  EXPECT_EQ(o.cu_doc_lens, nullptr);
  EXPECT_EQ(o.max_doc_len, 0);
  o.cu_doc_lens = cu_t;
  o.max_doc_len = 4;
  olm_tensor* out = nullptr;
  ASSERT_OK(olm_model_forward(model, x, &o, &out));
  std::vector<float> packed(2 * T * 256);
  ASSERT_OK(olm_tensor_copy_to_host(out, packed.data(), packed.size() * 4));
  olm_tensor_free(out);
  double worst = 0;
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    const int64_t s = cu[d], n = cu[d + 1] - cu[d];
    auto* alone_ids = ids(std::vector<int64_t>(tokens.begin() + s, tokens.begin() + s + n), 1, n);
    auto alone = logits(alone_ids);
    for (int64_t i = 0; i < n * 256; ++i)
      worst = std::max(worst, static_cast<double>(std::abs(alone[static_cast<size_t>(i)] - packed[static_cast<size_t>(s * 256 + i)])));
    olm_tensor_free(alone_ids);
  }
  EXPECT_LT(worst, 1e-5);
  auto plain = logits(x);
  double changed = 0;
  for (size_t i = 0; i < plain.size(); ++i) changed = std::max(changed, static_cast<double>(std::abs(plain[i] - packed[i])));
  EXPECT_GT(changed, 1e-3) << "masking must change the later documents";

  // A caller whose struct ends before cu_doc_lens: the library must not read the new fields.
  o.struct_size = offsetof(olm_forward_options, cu_doc_lens);
  ASSERT_OK(olm_model_forward(model, x, &o, &out));
  std::vector<float> old(plain.size());
  ASSERT_OK(olm_tensor_copy_to_host(out, old.data(), old.size() * 4));
  olm_tensor_free(out);
  EXPECT_EQ(old, plain);

  // The loss with documents: its logits are the packed ones.
  olm_loss_options lo;
  olm_loss_options_init(&lo);
  EXPECT_EQ(lo.cu_doc_lens, nullptr);
  lo.cu_doc_lens = cu_t;
  lo.return_logits = 1;
  olm_loss_result res;
  res.struct_size = sizeof res;
  ASSERT_OK(olm_model_loss(model, x, x, &lo, &res));
  std::vector<float> loss_logits(packed.size());
  ASSERT_OK(olm_tensor_copy_to_host(res.logits, loss_logits.data(), loss_logits.size() * 4));
  for (size_t i = 0; i < packed.size(); ++i) ASSERT_NEAR(loss_logits[i], packed[i], 1e-6);
  olm_loss_result_free(&res);

  // Broken boundaries are named errors.
  o.struct_size = sizeof o;
  o.max_doc_len = 3;
  out = sentinel<olm_tensor>();
  expect(olm_model_forward(model, x, &o, &out), OLM_ERR_INVALID_ARGUMENT, "max_doc_len (3) is less than the longest document (4)");
  o.max_doc_len = 0;
  const std::vector<int64_t> crossing = {0, 4, 8, 12};  // a document spans rows 0 and 1
  int64_t crossing_shape[1] = {4};
  olm_tensor* crossing_t = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, crossing_shape, 1, crossing.data(), 32, &crossing_t));
  o.cu_doc_lens = crossing_t;
  expect(olm_model_forward(model, x, &o, &out), OLM_ERR_INVALID_ARGUMENT, "cu_doc_lens: every row must start a document");
  lo.cu_doc_lens = crossing_t;
  expect(olm_model_loss(model, x, x, &lo, &res), OLM_ERR_INVALID_ARGUMENT, "cu_doc_lens");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  for (auto* t : {x, cu_t, crossing_t}) olm_tensor_free(t);
}

TEST_F(Tiny, LossReductionsZLossAndDivisor) {
  auto* x = ids(seq(12), 2, 6);
  auto lab = seq(12, 256);
  for (size_t i : {0u, 5u, 7u}) lab[i] = -100;
  auto* labels = ids(lab, 2, 6);
  auto run = [&](int32_t reduction, double z, double div, int32_t ret_logits = 0) {
    olm_loss_options o;
    olm_loss_options_init(&o);
    o.loss_reduction = reduction;
    o.z_loss_multiplier = z;
    o.loss_div_factor = div;
    o.return_logits = ret_logits;
    olm_loss_result r{};
    r.struct_size = sizeof r;
    olm_error* e = olm_model_loss(model, x, labels, &o, &r);
    EXPECT_EQ(e, nullptr) << olm_error_message(e);
    olm_error_free(e);
    return r;
  };
  auto read = [](olm_tensor* t) {
    size_t n = 0;
    olm_error_free(olm_tensor_nbytes(t, &n));
    std::vector<float> v(n / 4);
    olm_error_free(olm_tensor_copy_to_host(t, v.data(), n));
    return v;
  };
  auto none = run(OLM_LOSS_REDUCTION_NONE, 1e-3, 1.0);
  auto per = read(none.ce_loss);
  ASSERT_EQ(per.size(), 12u);
  double sum = 0;
  for (size_t i = 0; i < 12; ++i) {
    if (lab[i] == -100) EXPECT_EQ(per[i], 0.0f);
    sum += per[i];
  }
  auto mean = run(OLM_LOSS_REDUCTION_MEAN, 1e-3, 1.0);
  EXPECT_NEAR(mean.ce_loss_value, sum / 9, 1e-5);
  auto total = run(OLM_LOSS_REDUCTION_SUM, 1e-3, 1.0);
  EXPECT_NEAR(total.ce_loss_value, sum, 1e-4);
  EXPECT_GT(mean.z_loss_value, 0);
  EXPECT_NEAR(mean.loss_value, mean.ce_loss_value + mean.z_loss_value, 1e-6);
  auto halved = run(OLM_LOSS_REDUCTION_MEAN, 1e-3, 2.0, 1);
  EXPECT_NEAR(halved.loss_value * 2, mean.loss_value, 1e-6);
  EXPECT_NEAR(halved.z_loss_value * 2, mean.z_loss_value, 1e-7);
  EXPECT_EQ(read(halved.logits), logits(x)) << "returned logits equal olm_model_forward's";
  auto no_z = run(OLM_LOSS_REDUCTION_MEAN, 0.0, 1.0);
  EXPECT_EQ(no_z.z_loss, nullptr);
  EXPECT_EQ(no_z.logits, nullptr);
  EXPECT_EQ(no_z.z_loss_value, 0.0);
  for (auto* r : {&none, &mean, &total, &halved, &no_z}) {
    olm_loss_result_free(r);
    EXPECT_EQ(r->loss, nullptr);
  }

  // Bad inputs, each with the output struct untouched.
  olm_loss_options o;
  olm_loss_options_init(&o);
  olm_loss_result r{};
  r.struct_size = sizeof r;
  r.loss_value = 123;
  auto bad_lab = lab;
  bad_lab[3] = -7;
  auto* neg = ids(bad_lab, 2, 6);
  expect(olm_model_loss(model, x, neg, &o, &r), OLM_ERR_INVALID_ARGUMENT, "labels: value -7");
  auto* other_shape = ids(seq(12), 3, 4);
  expect(olm_model_loss(model, x, other_shape, &o, &r), OLM_ERR_INVALID_ARGUMENT, "differs from input_ids shape");
  o.loss_div_factor = NAN;
  expect(olm_model_loss(model, x, labels, &o, &r), OLM_ERR_INVALID_ARGUMENT, "loss_div_factor");
  olm_loss_options_init(&o);
  o.loss_reduction = 9;
  expect(olm_model_loss(model, x, labels, &o, &r), OLM_ERR_INVALID_ARGUMENT, "loss_reduction");
  olm_loss_options_init(&o);
  o.z_loss_multiplier = -1;
  expect(olm_model_loss(model, x, labels, &o, &r), OLM_ERR_INVALID_ARGUMENT, "z_loss_multiplier");
  EXPECT_EQ(r.loss_value, 123);
  EXPECT_EQ(r.loss, nullptr);
  // An older caller's smaller result struct: only the fields it has are written.
  struct OldResult {
    size_t struct_size;
    olm_tensor* loss;
    olm_tensor* ce_loss;
  } old{sizeof(OldResult), nullptr, nullptr};
  olm_loss_options_init(&o);
  ASSERT_OK(olm_model_loss(model, x, labels, &o, reinterpret_cast<olm_loss_result*>(&old)));
  EXPECT_NE(old.loss, nullptr);
  EXPECT_NE(old.ce_loss, nullptr);
  olm_loss_result_free(reinterpret_cast<olm_loss_result*>(&old));
  EXPECT_EQ(old.loss, nullptr);
  olm_loss_result zeroed{};
  olm_loss_result_free(&zeroed);
  // An older caller's smaller options struct (only up to loss_reduction): defaults for the rest.
  olm_loss_options_init(&o);
  o.struct_size = offsetof(olm_loss_options, z_loss_multiplier);
  o.loss_reduction = OLM_LOSS_REDUCTION_SUM;
  o.loss_div_factor = NAN;  // beyond struct_size: must be ignored
  olm_loss_result r2{};
  r2.struct_size = sizeof r2;
  ASSERT_OK(olm_model_loss(model, x, labels, &o, &r2));
  EXPECT_NEAR(r2.ce_loss_value, sum, 1e-4);
  olm_loss_result_free(&r2);
  for (auto* t : {x, labels, neg, other_shape}) olm_tensor_free(t);
}

TEST(CapiBasics, OptionsInitWritesOnlyTheCallersStruct) {
  // A program built against an older header has a smaller struct: here the loss options up to
  // loss_reduction, followed by bytes the library must not touch.
  constexpr size_t old_size = offsetof(olm_loss_options, z_loss_multiplier);
  std::vector<unsigned char> memory(sizeof(olm_loss_options) + 16, 0xAB);
  auto* o = reinterpret_cast<olm_loss_options*>(memory.data());
  olm_loss_options_init_sized(o, old_size);
  EXPECT_EQ(o->struct_size, old_size);
  EXPECT_EQ(o->ignore_index, -100);
  EXPECT_EQ(o->loss_reduction, OLM_LOSS_REDUCTION_MEAN);
  for (size_t i = old_size; i < memory.size(); ++i) ASSERT_EQ(memory[i], 0xAB) << "byte " << i << " was written";
  // The macro passes the caller's own sizeof; the 0.1 entry point fills the whole struct.
  olm_loss_options full;
  olm_loss_options_init(&full);
  EXPECT_EQ(full.struct_size, sizeof full);
  EXPECT_EQ(full.loss_div_factor, 0.0);  // unset
  olm_loss_options legacy{};
  (olm_loss_options_init)(&legacy);
  EXPECT_EQ(legacy.struct_size, sizeof legacy);
  EXPECT_EQ(legacy.loss_div_factor, 0.0);  // unset
  // Too small to hold struct_size, or NULL: nothing is written.
  size_t tiny = 7;
  olm_loss_options_init_sized(reinterpret_cast<olm_loss_options*>(&tiny), 4);
  EXPECT_EQ(tiny, 7u);
  olm_loss_options_init_sized(nullptr, sizeof full);
}

TEST_F(Tiny, ModelOptionsDevicesAndMemory) {
  olm_model* m = sentinel<olm_model>();
  for (const char* device : {"gpu", "cuda:x", "cuda:-1", "", "cpu0", "cuda:123456"})
    expect(olm_model_create(cfg, device, nullptr, &m), OLM_ERR_INVALID_ARGUMENT, "device");
  if (olm_cuda_device_count() == 0) {
    expect(olm_model_create(cfg, "cuda", nullptr, &m), OLM_ERR_DEVICE_UNAVAILABLE, "CUDA is not available");
    expect(olm_model_create(cfg, "cuda:1", nullptr, &m), OLM_ERR_DEVICE_UNAVAILABLE, "cuda:1");
  }
  olm_model_options o;
  olm_model_options_init(&o);
  o.param_dtype = OLM_DTYPE_INT32;
  expect(olm_model_create(cfg, "cpu", &o, &m), OLM_ERR_INVALID_ARGUMENT, "param_dtype");
  o.struct_size = 0;
  expect(olm_model_create(cfg, "cpu", &o, &m), OLM_ERR_INVALID_ARGUMENT, "options.struct_size");
  olm_config* huge = nullptr;
  ASSERT_OK(olm_config_from_preset("llama3_405B", 128256, &huge));
  expect(olm_model_create(huge, "cpu", nullptr, &m), OLM_ERR_OUT_OF_MEMORY, "parameters need");
  EXPECT_EQ(m, sentinel<olm_model>());
  olm_config_free(huge);
  // An older caller's options (struct_size + param_dtype only): init_weights keeps its default.
  olm_model_options_init(&o);
  o.struct_size = offsetof(olm_model_options, init_weights);
  o.param_dtype = OLM_DTYPE_BFLOAT16;
  o.init_weights = 0;  // not covered by struct_size: ignored
  ASSERT_OK(olm_model_create(cfg, "cpu", &o, &m));
  olm_parameter_info info{};
  info.struct_size = sizeof info;
  ASSERT_OK(olm_model_parameter_info(m, 0, &info));
  EXPECT_EQ(info.dtype, OLM_DTYPE_BFLOAT16);
  olm_model_free(m);
  // The config may be freed before the model.
  olm_config* c2 = nullptr;
  ASSERT_OK(olm_config_from_json(kTiny, std::strlen(kTiny), &c2));
  ASSERT_OK(olm_model_create(c2, "cpu", nullptr, &m));
  olm_config_free(c2);
  int64_t n = 0;
  ASSERT_OK(olm_model_num_params(m, &n));
  EXPECT_GT(n, 0);
  olm_model_free(m);
}

TEST_F(Tiny, ParameterListing) {
  size_t count = 0;
  ASSERT_OK(olm_model_parameter_count(model, &count));
  int64_t sum = 0, total = 0;
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) {
    olm_parameter_info info{};
    info.struct_size = sizeof info;
    ASSERT_OK(olm_model_parameter_info(model, i, &info));
    names.emplace_back(info.name);
    EXPECT_EQ(info.trainable, 1) << info.name;
    int64_t numel = 1;
    for (size_t d = 0; d < info.ndim; ++d) numel *= info.shape[d];
    sum += numel;
  }
  ASSERT_OK(olm_model_num_params(model, &total));
  int64_t cfg_total = 0;
  ASSERT_OK(olm_config_num_params(cfg, &cfg_total, nullptr));
  EXPECT_EQ(sum, total);
  EXPECT_EQ(total, cfg_total);
  EXPECT_EQ(names.front(), "embeddings.weight");
  EXPECT_EQ(names.back(), "lm_head.w_out.weight");
  for (const char* name : {"blocks.0.attention.w_q.weight", "blocks.0.attention.q_norm.weight",
                           "blocks.1.feed_forward.w3.weight", "blocks.1.feed_forward_norm.weight", "lm_head.norm.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  olm_parameter_info info{};
  info.struct_size = sizeof info;
  expect(olm_model_parameter_info(model, count, &info), OLM_ERR_INVALID_ARGUMENT, "out of range");
  // freeze_params shows in the listing.
  std::string frozen_json = kTiny;
  frozen_json.replace(frozen_json.find("\"n_layers\": 2"), 13, "\"n_layers\": 2, \"freeze_params\": [\"lm_head.*\"]");
  olm_config* frozen_cfg = nullptr;
  olm_model* frozen = nullptr;
  ASSERT_OK(olm_config_from_json(frozen_json.c_str(), frozen_json.size(), &frozen_cfg));
  ASSERT_OK(olm_model_create(frozen_cfg, "cpu", nullptr, &frozen));
  for (size_t i = 0; i < count; ++i) {
    ASSERT_OK(olm_model_parameter_info(frozen, i, &info));
    EXPECT_EQ(info.trainable, std::string(info.name).rfind("lm_head.", 0) == 0 ? 0 : 1) << info.name;
  }
  olm_model_free(frozen);
  olm_config_free(frozen_cfg);
}

TEST_F(Tiny, NormalizeMatricesOnlyForNormalizedModels) {
  expect(olm_model_normalize_matrices(model), OLM_ERR_INVALID_ARGUMENT, "not a normalized");
  expect(olm_model_normalize_matrices(nullptr), OLM_ERR_INVALID_ARGUMENT, "model");
  const char* ngpt = R"({"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2, "init_method": "normalized",
 "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4, "qk_norm": {"name": "l2_norm"},
   "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
 "lm_head": {"name": "normalized"}})";
  olm_config* c = nullptr;
  olm_model* m = nullptr;
  ASSERT_OK(olm_config_from_json(ngpt, std::strlen(ngpt), &c));
  ASSERT_OK(olm_model_create(c, "cpu", nullptr, &m));
  auto* x = ids(seq(8, 64), 1, 8);
  olm_tensor *a = nullptr, *b = nullptr;
  ASSERT_OK(olm_model_forward(m, x, nullptr, &a));
  // Initialization already normalized the matrices: doing it again changes logits by rounding only.
  ASSERT_OK(olm_model_normalize_matrices(m));
  ASSERT_OK(olm_model_forward(m, x, nullptr, &b));
  std::vector<float> va(8 * 64), vb(8 * 64);
  ASSERT_OK(olm_tensor_copy_to_host(a, va.data(), va.size() * sizeof(float)));
  ASSERT_OK(olm_tensor_copy_to_host(b, vb.data(), vb.size() * sizeof(float)));
  for (size_t i = 0; i < va.size(); ++i) ASSERT_NEAR(va[i], vb[i], 1e-4) << i;
  for (auto* t : {x, a, b}) olm_tensor_free(t);
  olm_model_free(m);
  olm_config_free(c);
}

TEST_F(Tiny, SafetensorsThroughTheAbi) {
  const std::string dir = olm_testing::temp_dir("capi");
  auto* x = ids(seq(8), 1, 8);
  const auto before = logits(x);
  const std::string path = dir + "/model.safetensors";
  ASSERT_OK(olm_model_save_safetensors(model, path.c_str()));
  olm_model_options o;
  olm_model_options_init(&o);
  o.init_weights = 0;
  olm_model* loaded = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", &o, &loaded));
  ASSERT_OK(olm_model_load_safetensors(loaded, path.c_str()));
  std::swap(model, loaded);
  EXPECT_EQ(logits(x), before) << "save then load is exact";
  std::swap(model, loaded);
  olm_model_free(loaded);

  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir + "/" + name, std::ios::binary) << content;
    return dir + "/" + name;
  };
  expect(olm_model_load_safetensors(model, (dir + "/nope.safetensors").c_str()), OLM_ERR_IO, "nope.safetensors");
  expect(olm_model_load_safetensors(model, write("half.safetensors", bytes.substr(0, bytes.size() / 2)).c_str()),
         OLM_ERR_PARSE, "truncated");
  std::string lying = bytes;
  lying[6] = '\x7f';  // the header length now claims far more bytes than the file has
  expect(olm_model_load_safetensors(model, write("lying.safetensors", lying).c_str()), OLM_ERR_PARSE, "claims");
  std::string garbage = bytes;
  std::memset(&garbage[8], '#', 32);
  expect(olm_model_load_safetensors(model, write("garbage.safetensors", garbage).c_str()), OLM_ERR_PARSE, "JSON");
  olm_config* other_cfg = nullptr;
  ASSERT_OK(olm_config_from_preset("olmo2_1M", 256, &other_cfg));
  olm_model* other = nullptr;
  ASSERT_OK(olm_model_create(other_cfg, "cpu", nullptr, &other));
  ASSERT_OK(olm_model_save_safetensors(other, (dir + "/other.safetensors").c_str()));
  expect(olm_model_load_safetensors(model, (dir + "/other.safetensors").c_str()), OLM_ERR_MISMATCH, "tensor '");
  EXPECT_EQ(logits(x), before) << "failed loads leave the model unchanged";
  expect(olm_model_save_safetensors(model, (dir + "/no/dir/m.safetensors").c_str()), OLM_ERR_IO, "no/dir");
  olm_model_free(other);
  olm_config_free(other_cfg);
  olm_tensor_free(x);
}

TEST_F(Tiny, DifferentHandlesOnDifferentThreads) {
  olm_model* second = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &second));
  auto* x = ids(seq(16), 2, 8);
  const auto expected = logits(x);
  std::vector<float> a, b;
  auto run = [&](olm_model* m, std::vector<float>& out) {
    for (int rep = 0; rep < 5; ++rep) {
      olm_tensor* l = nullptr;
      olm_error* e = olm_model_forward(m, x, nullptr, &l);
      if (e) {
        olm_error_free(e);
        return;
      }
      size_t n = 0;
      olm_error_free(olm_tensor_nbytes(l, &n));
      out.resize(n / 4);
      olm_error_free(olm_tensor_copy_to_host(l, out.data(), n));
      olm_tensor_free(l);
    }
  };
  std::thread t1(run, model, std::ref(a)), t2(run, second, std::ref(b));
  t1.join();
  t2.join();
  EXPECT_EQ(a, expected);
  EXPECT_EQ(b, expected) << "same seed, same weights, same logits";
  olm_model_free(second);
  olm_tensor_free(x);
}

}  // namespace

// MoE through the ABI: active parameter counts, the routers' losses in olm_loss_result (apart
// from loss, scalars for every reduction, proportional to their weights), and an older
// caller's smaller result struct left untouched past its struct_size.
TEST(CapiMoE, ActiveParamsAndRouterLosses) {
  auto moe_json = [](const char* lb_weight) {
    return std::string(R"({"name": "moe", "d_model": 32, "vocab_size": 64, "n_layers": 2,
     "block": {"name": "moe", "attention": {"n_heads": 4, "bias": false},
       "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2},
                            "lb_loss_weight": )") + lb_weight + R"(, "z_loss_weight": 0.001},
       "layer_norm": {"name": "rms", "bias": false}},
     "lm_head": {"bias": false}})";
  };
  const std::string text = moe_json("0.01");
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_json(text.c_str(), text.size(), &cfg));
  int64_t total = 0, non_emb = 0, active = 0, active_non_emb = 0;
  ASSERT_OK(olm_config_num_params(cfg, &total, &non_emb));
  ASSERT_OK(olm_config_num_active_params(cfg, &active, &active_non_emb));
  EXPECT_EQ(total - active, 2 * 3 * 32 * 16 * (4 - 2));  // two idle experts per layer
  EXPECT_EQ(active - active_non_emb, 64 * 32);
  expect(olm_config_num_active_params(nullptr, &active, nullptr), OLM_ERR_INVALID_ARGUMENT, "config: NULL");

  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  std::vector<int64_t> v = seq(16, 64);
  int64_t shape[2] = {2, 8};
  olm_tensor* x = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, v.data(), v.size() * 8, &x));
  olm_loss_options o;
  olm_loss_options_init(&o);
  olm_loss_result r{};
  r.struct_size = sizeof r;
  ASSERT_OK(olm_model_loss(model, x, x, &o, &r));
  ASSERT_NE(r.lb_loss, nullptr);
  ASSERT_NE(r.router_z_loss, nullptr);
  float lb = 0, z = 0;
  ASSERT_OK(olm_tensor_copy_to_host(r.lb_loss, &lb, sizeof lb));
  ASSERT_OK(olm_tensor_copy_to_host(r.router_z_loss, &z, sizeof z));
  EXPECT_EQ(static_cast<double>(lb), r.lb_loss_value);
  EXPECT_EQ(static_cast<double>(z), r.router_z_loss_value);
  EXPECT_GT(r.lb_loss_value, 0.0);
  EXPECT_GT(r.router_z_loss_value, 0.0);
  EXPECT_NEAR(r.loss_value, r.ce_loss_value, 1e-6);  // not part of loss
  olm_loss_result_free(&r);
  EXPECT_EQ(r.lb_loss, nullptr);

  // Per-token reduction: the router losses stay scalars.
  o.loss_reduction = OLM_LOSS_REDUCTION_NONE;
  olm_loss_result none{};
  none.struct_size = sizeof none;
  ASSERT_OK(olm_model_loss(model, x, x, &o, &none));
  size_t ndim = 9;
  ASSERT_OK(olm_tensor_ndim(none.lb_loss, &ndim));
  EXPECT_EQ(ndim, 0u);
  EXPECT_FLOAT_EQ(static_cast<float>(none.lb_loss_value), lb);
  olm_loss_result_free(&none);

  // An older caller's struct ends before lb_loss: nothing is written past it.
  struct {
    olm_loss_result r;
    char guard[64];
  } old;
  std::memset(&old, 0x5a, sizeof old);
  old.r.struct_size = offsetof(olm_loss_result, lb_loss);
  olm_loss_options_init(&o);
  ASSERT_OK(olm_model_loss(model, x, x, &o, &old.r));
  const auto* tail = reinterpret_cast<const unsigned char*>(&old.r) + offsetof(olm_loss_result, lb_loss);
  for (size_t i = 0; i < sizeof old - offsetof(olm_loss_result, lb_loss); ++i) ASSERT_EQ(tail[i], 0x5a) << i;
  olm_loss_result_free(&old.r);

  // Twice the weight, the same routing: twice the load-balancing loss.
  const std::string doubled = moe_json("0.02");
  olm_config* cfg2 = nullptr;
  ASSERT_OK(olm_config_from_json(doubled.c_str(), doubled.size(), &cfg2));
  olm_model* model2 = nullptr;
  ASSERT_OK(olm_model_create(cfg2, "cpu", nullptr, &model2));
  olm_loss_result r2{};
  r2.struct_size = sizeof r2;
  ASSERT_OK(olm_model_loss(model2, x, x, &o, &r2));
  EXPECT_NEAR(r2.lb_loss_value, 2 * static_cast<double>(lb), 1e-7);
  EXPECT_EQ(r2.router_z_loss_value, static_cast<double>(z));
  olm_loss_result_free(&r2);
  olm_tensor_free(x);
  olm_model_free(model2);
  olm_model_free(model);
  olm_config_free(cfg2);
  olm_config_free(cfg);
}

// ---- Configs through the ABI: one validation whichever door, JSON that reads back, errors
// that name the path and what was expected (issues #12 and #11).

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

// A field that the caller's struct_size covers only in part is neither read nor written: here
// half of z_loss_multiplier (its low bytes, non-zero for 1e-3) and half of loss_value.
TEST_F(Tiny, Issue12PartlyCoveredFieldsAreNeitherReadNorWritten) {
  olm_tensor* x = ids(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, 1, 6);
  olm_loss_options o;
  olm_loss_options_init(&o);
  o.z_loss_multiplier = 1e-3;
  o.struct_size = offsetof(olm_loss_options, z_loss_multiplier) + 4;
  olm_loss_result r{};
  r.struct_size = sizeof r;
  ASSERT_OK(olm_model_loss(model, x, x, &o, &r));
  EXPECT_EQ(r.z_loss, nullptr) << "z_loss_multiplier was read from half the caller's bytes";
  EXPECT_EQ(r.z_loss_value, 0.0);
  olm_loss_result_free(&r);

  struct {
    olm_loss_result r;
    char guard[16];
  } part;
  std::memset(&part, 0x5a, sizeof part);
  part.r.struct_size = offsetof(olm_loss_result, loss_value) + 4;
  olm_loss_options_init(&o);
  ASSERT_OK(olm_model_loss(model, x, x, &o, &part.r));
  EXPECT_EQ(part.r.struct_size, offsetof(olm_loss_result, loss_value) + 4);
  EXPECT_NE(part.r.logits, sentinel<olm_tensor>());
  const auto* tail = reinterpret_cast<const unsigned char*>(&part) + offsetof(olm_loss_result, loss_value);
  for (size_t i = 0; i < sizeof part - offsetof(olm_loss_result, loss_value); ++i) ASSERT_EQ(tail[i], 0x5a) << i;
  olm_loss_result_free(&part.r);

  // The options init writes whole fields only, and sets struct_size to what it was given.
  std::vector<unsigned char> memory(sizeof(olm_loss_options) + 16, 0xAB);
  auto* partial = reinterpret_cast<olm_loss_options*>(memory.data());
  const size_t size = offsetof(olm_loss_options, z_loss_multiplier) + 4;
  olm_loss_options_init_sized(partial, size);
  EXPECT_EQ(partial->struct_size, size);
  EXPECT_EQ(partial->loss_reduction, OLM_LOSS_REDUCTION_MEAN);
  for (size_t i = offsetof(olm_loss_options, z_loss_multiplier); i < memory.size(); ++i)
    ASSERT_EQ(memory[i], 0xAB) << "byte " << i << " was written";
  // A larger struct_size (a newer caller): the library's fields are read, nothing past them.
  struct {
    olm_forward_options o;
    int64_t newer_field;
  } newer;
  olm_forward_options_init(&newer.o);
  newer.o.struct_size = sizeof newer;
  newer.o.logits_to_keep = 2;
  newer.newer_field = -7;
  olm_tensor* logits = nullptr;
  ASSERT_OK(olm_model_forward(model, x, &newer.o, &logits));
  size_t ndim = 0;
  ASSERT_OK(olm_tensor_ndim(logits, &ndim));
  int64_t shape[3] = {0, 0, 0};
  ASSERT_OK(olm_tensor_shape(logits, shape, 3));
  EXPECT_EQ(shape[1], 2);
  olm_tensor_free(logits);
  olm_tensor_free(x);
}

// One rule for every struct: a struct_size that does not cover the first field (0 included)
// is refused, naming the argument, with nothing written.
TEST_F(Tiny, Issue12StructSizeBelowTheFirstFieldIsRefused) {
  olm_parameter_info info;
  std::memset(&info, 0x5a, sizeof info);
  for (size_t size : {size_t{0}, sizeof(size_t), offsetof(olm_parameter_info, name) + 4}) {
    info.struct_size = size;
    expect(olm_model_parameter_info(model, 0, &info), OLM_ERR_INVALID_ARGUMENT, "out->struct_size");
    EXPECT_EQ(info.struct_size, size);
    const auto* bytes = reinterpret_cast<const unsigned char*>(&info);
    for (size_t i = sizeof(size_t); i < sizeof info; ++i) ASSERT_EQ(bytes[i], 0x5a) << i;
  }
  olm_tensor* x = ids(std::vector<int64_t>{1, 2, 3}, 1, 3);
  olm_tensor* out = sentinel<olm_tensor>();
  olm_forward_options fo;
  olm_forward_options_init(&fo);
  fo.struct_size = sizeof(size_t);
  expect(olm_model_forward(model, x, &fo, &out), OLM_ERR_INVALID_ARGUMENT, "options.struct_size");
  olm_generate_options go;
  olm_generate_options_init(&go);
  go.struct_size = 12;
  expect(olm_model_generate(model, x, &go, &out), OLM_ERR_INVALID_ARGUMENT, "options.struct_size");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  olm_loss_result r;
  std::memset(&r, 0x5a, sizeof r);
  r.struct_size = 0;
  expect(olm_model_loss(model, x, x, nullptr, &r), OLM_ERR_INVALID_ARGUMENT, "out->struct_size");
  EXPECT_EQ(r.loss, reinterpret_cast<olm_tensor*>(static_cast<uintptr_t>(0x5a5a5a5a5a5a5a5aull)));
  olm_tensor_free(x);
}

// A NUL byte in the caller's input (a buffer with a length, a tensor name in a file) does not
// cut the message short: it reads "\0".
TEST_F(Tiny, Issue12MessagesAreNotCutAtANulByte) {
  // (A config's JSON text refuses NUL bytes outright.)
  const std::string json = std::string(R"({"d_model": 64, "vocab_size": 256, "n_la)") + '\0' +
                           R"(yers_x": 2})";
  olm_config* c = sentinel<olm_config>();
  expect(olm_config_from_json(json.data(), json.size(), &c), OLM_ERR_PARSE, "NUL byte");
  EXPECT_EQ(c, sentinel<olm_config>());

  // A safetensors file whose tensor name holds a NUL (JSON "\u0000").
  const std::string dir = olm_testing::temp_dir("capi_nul");
  const std::string path = dir + "/nul.safetensors";
  std::string header = R"({"emb\u0000tail": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  while (header.size() % 8) header += ' ';
  {
    std::ofstream f(path, std::ios::binary);
    const uint64_t n = header.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header;
    const float v = 1;
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  const Err load = take(olm_model_load_safetensors(model, path.c_str()));
  EXPECT_NE(load.code, OLM_ERR_INTERNAL) << load.message;
  EXPECT_THAT(load.message, HasSubstr("emb\\0tail")) << load.message;
}

// Options of forward and loss are named as olm.h names them (options.<field>).
TEST_F(Tiny, Issue12ForwardAndLossOptionsAreNamed) {
  olm_tensor* x = ids(std::vector<int64_t>{1, 2, 3, 4}, 1, 4);
  olm_tensor* out = sentinel<olm_tensor>();
  olm_forward_options fo;
  olm_forward_options_init(&fo);
  fo.logits_to_keep = 5;
  expect(olm_model_forward(model, x, &fo, &out), OLM_ERR_INVALID_ARGUMENT, "options.logits_to_keep");
  olm_forward_options_init(&fo);
  fo.max_doc_len = -1;
  expect(olm_model_forward(model, x, &fo, &out), OLM_ERR_INVALID_ARGUMENT, "options.max_doc_len");
  const float cu_f[2] = {0, 4};
  const int64_t two[1] = {2};
  olm_tensor* cu = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, two, 1, cu_f, sizeof cu_f, &cu));
  olm_forward_options_init(&fo);
  fo.cu_doc_lens = cu;
  expect(olm_model_forward(model, x, &fo, &out), OLM_ERR_INVALID_ARGUMENT, "options.cu_doc_lens: dtype");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  olm_loss_options lo;
  olm_loss_options_init(&lo);
  lo.loss_div_factor = INFINITY;  // 0 is "unset"; a divisor must be finite
  olm_loss_result r{};
  r.struct_size = sizeof r;
  expect(olm_model_loss(model, x, x, &lo, &r), OLM_ERR_INVALID_ARGUMENT, "options.loss_div_factor");
  olm_loss_options_init(&lo);
  lo.cu_doc_lens = cu;
  expect(olm_model_loss(model, x, x, &lo, &r), OLM_ERR_INVALID_ARGUMENT, "options.cu_doc_lens");
  olm_tensor_free(cu);
  olm_tensor_free(x);
}

// A sweep of bad tensors through every entry point that takes one: each is an invalid
// argument naming the argument, never OLM_ERR_INTERNAL.
TEST_F(Tiny, Issue12BadTensorsAreNeverInternalErrors) {
  auto make = [](olm_dtype dtype, std::vector<int64_t> shape) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    const size_t element = dtype == OLM_DTYPE_INT64 ? 8 : dtype == OLM_DTYPE_INT32 || dtype == OLM_DTYPE_FLOAT32 ? 4 : 2;
    std::vector<unsigned char> zeros(n * element, 0);
    olm_tensor* t = nullptr;
    olm_error* e = olm_tensor_create(dtype, shape.data(), shape.size(), zeros.data(), zeros.size(), &t);
    EXPECT_EQ(e, nullptr) << olm_error_message(e);
    olm_error_free(e);
    return t;
  };
  olm_tensor* good = ids(std::vector<int64_t>{1, 2, 3, 4}, 1, 4);
  struct Bad {
    olm_tensor* t;
    const char* what;
  };
  std::vector<Bad> bad = {
      {make(OLM_DTYPE_FLOAT32, {1, 4}), "float32"},   {make(OLM_DTYPE_BFLOAT16, {1, 4}), "bfloat16"},
      {make(OLM_DTYPE_INT64, {4}), "1-D"},            {make(OLM_DTYPE_INT64, {1, 1, 4}), "3-D"},
      {make(OLM_DTYPE_INT64, {0, 4}), "empty rows"},  {make(OLM_DTYPE_INT64, {1, 0}), "empty"},
      {make(OLM_DTYPE_INT64, {}), "0-D"},             {ids(std::vector<int64_t>{1, 2, 3, 256}, 1, 4), "oov"},
      {ids(std::vector<int64_t>{-1, 2, 3, 4}, 1, 4), "negative"},
      {ids(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4), "other shape"}};
  for (const auto& b : bad) {
    SCOPED_TRACE(b.what);
    olm_tensor* out = sentinel<olm_tensor>();
    const std::string is_other_shape = b.what;
    if (is_other_shape != "other shape") {
      const Err f = take(olm_model_forward(model, b.t, nullptr, &out));
      EXPECT_EQ(f.code, OLM_ERR_INVALID_ARGUMENT) << f.message;
      EXPECT_THAT(f.message, HasSubstr("input_ids")) << f.message;
    }
    olm_loss_result r{};
    r.struct_size = sizeof r;
    const Err l = take(olm_model_loss(model, good, b.t, nullptr, &r));
    EXPECT_EQ(l.code, OLM_ERR_INVALID_ARGUMENT) << l.message;
    EXPECT_THAT(l.message, HasSubstr("labels")) << l.message;
    if (is_other_shape != "other shape") {
      const Err l2 = take(olm_model_loss(model, b.t, good, nullptr, &r));
      EXPECT_EQ(l2.code, OLM_ERR_INVALID_ARGUMENT) << l2.message;
      EXPECT_THAT(l2.message, HasSubstr("input_ids")) << l2.message;
    }
    if (is_other_shape != "1-D") {  // (T,) is a valid prompt
      const Err g = take(olm_model_generate(model, b.t, nullptr, &out));
      EXPECT_EQ(g.code, OLM_ERR_INVALID_ARGUMENT) << g.message;
      EXPECT_THAT(g.message, HasSubstr("prompt")) << g.message;
    }
    EXPECT_EQ(out, sentinel<olm_tensor>());
  }
  for (auto& b : bad) olm_tensor_free(b.t);
  olm_tensor_free(good);
}
