// Helpers shared by the C ABI test files (they include only olm.h from the library).
#pragma once
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "olm.h"

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    olm_error* err_ = (expr);                            \
    ASSERT_EQ(err_, nullptr) << olm_error_message(err_); \
  } while (0)

namespace olm_testing {

// A fresh directory under OLM_TEST_TMPDIR (or /tmp).
inline std::string temp_dir(const std::string& name) {
  const char* base = std::getenv("OLM_TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/" + name + "_XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back(0);
  return mkdtemp(buf.data());
}

// Takes ownership of an error and returns its message ("" when NULL); *code gets its code.
inline std::string consume(olm_error* err, int32_t* code = nullptr) {
  if (code) *code = olm_error_code(err);
  std::string message = olm_error_message(err);
  olm_error_free(err);
  return message;
}

// ---- a tiny model, and error helpers in function form ----------------------------------

inline const char* kTiny = R"({"d_model": 64, "vocab_size": 256, "n_layers": 2,
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
inline Err take(olm_error* e) {
  EXPECT_NE(e, nullptr) << "expected an error";
  Err out{olm_error_code(e), olm_error_message(e)};
  olm_error_free(e);
  return out;
}

inline void expect(olm_error* e, int32_t code, const std::string& needle) {
  const Err err = take(e);
  EXPECT_EQ(err.code, code) << err.message;
  EXPECT_THAT(err.message, ::testing::HasSubstr(needle));
}

template <class T>
inline T* sentinel() {
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

inline std::vector<int64_t> seq(int64_t n, int64_t mod = 256) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (i * 37 + 11) % mod;
  return v;
}

}  // namespace olm_testing

// The call fails with want_code and a message containing needle.
#define EXPECT_ERR(expr, want_code, needle)                                 \
  do {                                                                      \
    int32_t code_ = 0;                                                      \
    const std::string message_ = olm_testing::consume((expr), &code_);      \
    EXPECT_EQ(code_, want_code) << message_;                                \
    EXPECT_THAT(message_, ::testing::HasSubstr(needle));                    \
  } while (0)
