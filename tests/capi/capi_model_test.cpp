// capi/capi_model.cpp: models through the ABI: forward, loss, document masking, parameters,
// safetensors, MoE router losses, handles on threads.
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

}  // namespace
