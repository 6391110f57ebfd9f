// The C ABI's common rules as a C caller meets them: version and error objects, NULL
// arguments named, NULL releases, options init and the struct_size rule (capi/capi_error.cpp,
// capi/capi_struct.h).
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

}  // namespace
