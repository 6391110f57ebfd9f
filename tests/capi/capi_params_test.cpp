// Parameters by name, DLPack exchange, the thread count and loss_div_factor's "unset", as a C
// caller uses them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

// A DLPack DLManagedTensor as dlpack.h lays it out, written here as a C caller without
// dlpack.h would (olm.h does not need it).
struct DLDevice_ {
  int32_t device_type;  // 1: kDLCPU
  int32_t device_id;
};
struct DLDataType_ {
  uint8_t code;  // 0 int, 2 float, 4 bfloat
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor_ {
  void* data;
  DLDevice_ device;
  int32_t ndim;
  DLDataType_ dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor_ {
  DLTensor_ dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor_*);
};

const char* kModel = R"({"d_model": 32, "vocab_size": 64, "n_layers": 2,
  "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000},
    "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "feed_forward": {"hidden_size": 96, "bias": false},
    "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
  "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";

const char* kWq = "blocks.0.attention.w_q.weight";

olm_model* make_model(const char* json, olm_dtype param_dtype = -1) {
  olm_config* cfg = nullptr;
  EXPECT_EQ(olm_config_from_json(json, std::strlen(json), &cfg), nullptr);
  olm_model_options o;
  olm_model_options_init(&o);
  o.param_dtype = param_dtype;
  olm_model* model = nullptr;
  EXPECT_EQ(olm_model_create(cfg, "cpu", &o, &model), nullptr);
  olm_config_free(cfg);
  return model;
}

olm_tensor* floats(const std::vector<float>& v, std::vector<int64_t> shape) {
  olm_tensor* t = nullptr;
  EXPECT_EQ(olm_tensor_create(OLM_DTYPE_FLOAT32, shape.data(), shape.size(), v.data(), v.size() * 4, &t), nullptr);
  return t;
}

olm_tensor* ids(int64_t rows, int64_t cols, int64_t vocab, int64_t salt = 0) {
  std::vector<int64_t> v(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = (static_cast<int64_t>(i) * 7 + 3 + salt) % vocab;
  const int64_t shape[] = {rows, cols};
  olm_tensor* t = nullptr;
  EXPECT_EQ(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, v.data(), v.size() * 8, &t), nullptr);
  return t;
}

template <class T>
std::vector<T> read(const olm_tensor* t) {
  size_t n = 0;
  EXPECT_EQ(olm_tensor_nbytes(t, &n), nullptr);
  std::vector<T> v(n / sizeof(T));
  EXPECT_EQ(olm_tensor_copy_to_host(t, v.data(), n), nullptr);
  return v;
}

std::vector<float> get(const olm_model* model, const char* name) {
  olm_tensor* t = nullptr;
  EXPECT_EQ(olm_model_get_parameter(model, name, &t), nullptr);
  auto v = read<float>(t);
  olm_tensor_free(t);
  return v;
}

std::vector<float> forward(olm_model* model) {
  olm_tensor* x = ids(2, 8, 64);
  olm_tensor* logits = nullptr;
  EXPECT_EQ(olm_model_forward(model, x, nullptr, &logits), nullptr);
  auto v = read<float>(logits);
  olm_tensor_free(logits);
  olm_tensor_free(x);
  return v;
}

int32_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

template <class T>
T* sentinel() {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(0x51));
}

TEST(CapiParams, GetCopiesEveryListedParameter) {
  olm_model* model = make_model(kModel);
  size_t count = 0;
  ASSERT_OK(olm_model_parameter_count(model, &count));
  for (size_t i = 0; i < count; ++i) {
    olm_parameter_info info;
    info.struct_size = sizeof info;
    ASSERT_OK(olm_model_parameter_info(model, i, &info));
    olm_tensor* t = nullptr;
    ASSERT_OK(olm_model_get_parameter(model, info.name, &t));
    olm_dtype dtype = -1;
    ASSERT_OK(olm_tensor_dtype(t, &dtype));
    EXPECT_EQ(dtype, info.dtype) << info.name;
    int64_t shape[OLM_MAX_DIMS] = {};
    size_t ndim = 0;
    ASSERT_OK(olm_tensor_ndim(t, &ndim));
    ASSERT_EQ(ndim, info.ndim) << info.name;
    ASSERT_OK(olm_tensor_shape(t, shape, OLM_MAX_DIMS));
    for (size_t d = 0; d < ndim; ++d) EXPECT_EQ(shape[d], info.shape[d]) << info.name;
    olm_tensor_free(t);
  }
  // A copy: writing into it (through DLPack) leaves the model alone.
  const auto before = get(model, kWq);
  olm_tensor* t = nullptr;
  ASSERT_OK(olm_model_get_parameter(model, kWq, &t));
  void* dl = nullptr;
  ASSERT_OK(olm_tensor_to_dlpack(t, &dl));
  auto* managed = static_cast<DLManagedTensor_*>(dl);
  static_cast<float*>(managed->dl_tensor.data)[0] += 1.0f;
  managed->deleter(managed);
  EXPECT_NE(read<float>(t)[0], before[0]);
  EXPECT_EQ(get(model, kWq), before);
  olm_tensor_free(t);
  olm_model_free(model);
}

TEST(CapiParams, SetChangesTheModelAndChecksItsArguments) {
  olm_model* model = make_model(kModel);
  const auto logits_before = forward(model);
  std::vector<float> values(32 * 32);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.001f * static_cast<float>(i % 97) - 0.05f;
  olm_tensor* v = floats(values, {32, 32});
  ASSERT_OK(olm_model_set_parameter(model, kWq, v));
  EXPECT_EQ(get(model, kWq), values);
  EXPECT_NE(forward(model), logits_before);

  // Unknown names suggest the nearest; shapes and dtypes are checked; the model is unchanged.
  olm_tensor* out = sentinel<olm_tensor>();
  EXPECT_ERR(olm_model_get_parameter(model, "blocks.0.attention.wq.weight", &out), OLM_ERR_INVALID_ARGUMENT,
             "name: the model has no parameter \"blocks.0.attention.wq.weight\"; did you mean \"" +
                 std::string(kWq) + "\"?");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  EXPECT_ERR(olm_model_set_parameter(model, "blocks.9.attention.w_q.weight", v), OLM_ERR_INVALID_ARGUMENT,
             "did you mean");
  EXPECT_ERR(olm_model_get_parameter(model, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "name: NULL");
  EXPECT_ERR(olm_model_get_parameter(nullptr, kWq, &out), OLM_ERR_INVALID_ARGUMENT, "model: NULL");
  EXPECT_ERR(olm_model_get_parameter(model, kWq, nullptr), OLM_ERR_INVALID_ARGUMENT, "out: NULL");
  EXPECT_ERR(olm_model_set_parameter(model, kWq, nullptr), OLM_ERR_INVALID_ARGUMENT, "value: NULL");
  olm_tensor* wrong_shape = floats(std::vector<float>(32 * 16), {16, 32});
  EXPECT_ERR(olm_model_set_parameter(model, kWq, wrong_shape), OLM_ERR_INVALID_ARGUMENT,
             "value: shape [16, 32] differs from blocks.0.attention.w_q.weight's shape [32, 32]");
  std::vector<int64_t> ints(32 * 32, 1);
  const int64_t shape[] = {32, 32};
  olm_tensor* wrong_dtype = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, ints.data(), ints.size() * 8, &wrong_dtype));
  EXPECT_ERR(olm_model_set_parameter(model, kWq, wrong_dtype), OLM_ERR_INVALID_ARGUMENT,
             "value: dtype Long is neither");
  EXPECT_EQ(get(model, kWq), values);
  for (auto* t : {v, wrong_shape, wrong_dtype}) olm_tensor_free(t);
  olm_model_free(model);
}

TEST(CapiParams, Bfloat16TakesFloat32RoundedOrItsOwnDtype) {
  olm_model* model = make_model(kModel, OLM_DTYPE_BFLOAT16);
  // 1 + 2^-9 lies between bfloat16's 1 and 1 + 2^-7: it rounds to 1.
  std::vector<float> values(32 * 32, 1.0f + 1.0f / 512);
  values[1] = 0.5f;
  olm_tensor* v = floats(values, {32, 32});
  ASSERT_OK(olm_model_set_parameter(model, kWq, v));
  olm_tensor* back = nullptr;
  ASSERT_OK(olm_model_get_parameter(model, kWq, &back));
  olm_dtype dtype = -1;
  ASSERT_OK(olm_tensor_dtype(back, &dtype));
  EXPECT_EQ(dtype, OLM_DTYPE_BFLOAT16);
  const auto bits = read<uint16_t>(back);
  EXPECT_EQ(bits[0], 0x3F80);  // 1.0
  EXPECT_EQ(bits[1], 0x3F00);  // 0.5
  // Its own dtype goes in unchanged.
  ASSERT_OK(olm_model_set_parameter(model, "blocks.1.attention.w_q.weight", back));
  olm_tensor* other = nullptr;
  ASSERT_OK(olm_model_get_parameter(model, "blocks.1.attention.w_q.weight", &other));
  EXPECT_EQ(read<uint16_t>(other), bits);
  for (auto* t : {v, back, other}) olm_tensor_free(t);
  olm_model_free(model);
}

TEST(CapiParams, TiedEmbeddingsAnswerToBothNames) {
  std::string json = kModel;
  json.insert(json.rfind('}'), R"(, "tie_word_embeddings": true)");
  olm_model* model = make_model(json.c_str());
  EXPECT_EQ(get(model, "lm_head.w_out.weight"), get(model, "embeddings.weight"));
  std::vector<float> values(64 * 32, 0.25f);
  olm_tensor* v = floats(values, {64, 32});
  ASSERT_OK(olm_model_set_parameter(model, "lm_head.w_out.weight", v));
  EXPECT_EQ(get(model, "embeddings.weight"), values);
  olm_tensor_free(v);
  olm_model_free(model);
}

// Writing a parameter keeps the trainer's optimizer state: two identical trainers stay
// bit-identical when one of them has a parameter rewritten with its own values between steps.
TEST(CapiParams, SetKeepsTheOptimizerState) {
  const std::string train = std::string(R"({"model": )") + kModel +
                            R"(, "sequence_length": 8, "global_batch_size": 16, "rank_microbatch_size": 16,
      "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}})";
  olm_train_config* tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(train.data(), train.size(), &tcfg));
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_train_config_model(tcfg, &cfg));
  olm_model* models[2] = {};
  olm_trainer* trainers[2] = {};
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &models[i]));
    ASSERT_OK(olm_trainer_create(models[i], tcfg, &trainers[i]));
  }
  auto step = [&](int i, int s) {
    olm_tensor* x = ids(2, 8, 64, s);
    olm_step_metrics m;
    m.struct_size = sizeof m;
    EXPECT_EQ(olm_trainer_step(trainers[i], x, nullptr, &m), nullptr);
    olm_tensor_free(x);
    return m.loss;
  };
  for (int i = 0; i < 2; ++i) step(i, 0);
  olm_tensor* same = nullptr;
  ASSERT_OK(olm_model_get_parameter(models[1], kWq, &same));
  ASSERT_OK(olm_model_set_parameter(models[1], kWq, same));
  olm_tensor_free(same);
  for (int s = 1; s < 3; ++s) EXPECT_EQ(step(0, s), step(1, s));
  EXPECT_EQ(get(models[0], kWq), get(models[1], kWq));
  // A new value is what the next step starts from, and it still trains.
  const std::vector<float> zeros(32 * 32, 0.0f);
  olm_tensor* z = floats(zeros, {32, 32});
  ASSERT_OK(olm_model_set_parameter(models[1], kWq, z));
  step(1, 3);
  const auto after = get(models[1], kWq);
  EXPECT_NE(after, zeros);
  for (float x : after) EXPECT_LT(std::abs(x), 0.02f);  // one AdamW step of lr 0.01 from 0
  olm_parameter_info info;
  info.struct_size = sizeof info;
  ASSERT_OK(olm_model_parameter_info(models[1], 1, &info));
  EXPECT_EQ(info.trainable, 1);
  olm_tensor_free(z);
  for (int i = 0; i < 2; ++i) {
    olm_trainer_free(trainers[i]);
    olm_model_free(models[i]);
  }
  olm_config_free(cfg);
  olm_train_config_free(tcfg);
}

TEST(CapiParams, RefusedWhileFsdpShardsTheModel) {
  const std::string train = std::string(R"({"model": )") + kModel +
                            R"(, "sequence_length": 8, "global_batch_size": 16, "rank_microbatch_size": 16,
      "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}, "data_parallel": {"name": "fsdp"}})";
  olm_train_config* tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(train.data(), train.size(), &tcfg));
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_train_config_model(tcfg, &cfg));
  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  olm_trainer* trainer = nullptr;
  ASSERT_OK(olm_trainer_create(model, tcfg, &trainer));
  olm_dist_options o;
  olm_dist_options_init(&o);
  o.rank = 0;
  o.world_size = 1;
  o.master_addr = "127.0.0.1";
  o.master_port = free_port();
  olm_dist* dist = nullptr;
  ASSERT_OK(olm_dist_create(&o, &dist));
  ASSERT_OK(olm_trainer_set_dist(trainer, dist));
  olm_tensor* x = ids(2, 8, 64);
  olm_step_metrics m;
  m.struct_size = sizeof m;
  ASSERT_OK(olm_trainer_step(trainer, x, nullptr, &m));
  // Between steps the parameters hold no data.
  olm_tensor* out = sentinel<olm_tensor>();
  EXPECT_ERR(olm_model_get_parameter(model, kWq, &out), OLM_ERR_INVALID_ARGUMENT, "model: ");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  olm_tensor* v = floats(std::vector<float>(32 * 32, 0.5f), {32, 32});
  EXPECT_ERR(olm_model_set_parameter(model, kWq, v), OLM_ERR_INVALID_ARGUMENT, "fsdp");
  // After an evaluation they are gathered: readable.
  olm_dataset_options dopts;
  olm_dataset_options_init(&dopts);
  dopts.sequence_length = 8;
  dopts.vocab_size = 64;
  std::vector<int64_t> tokens(64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>(i * 5 % 64);
  olm_dataset* data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &dopts, &data));
  olm_eval_metrics em;
  em.struct_size = sizeof em;
  ASSERT_OK(olm_trainer_evaluate(trainer, data, 1, &em));
  const auto gathered = get(model, kWq);
  EXPECT_EQ(gathered.size(), 32u * 32u);
  // Detached, the model owns full parameters again.
  ASSERT_OK(olm_trainer_set_dist(trainer, nullptr));
  ASSERT_OK(olm_model_set_parameter(model, kWq, v));
  EXPECT_EQ(get(model, kWq), std::vector<float>(32 * 32, 0.5f));
  olm_tensor_free(v);
  olm_tensor_free(x);
  olm_dataset_free(data);
  olm_trainer_free(trainer);
  olm_dist_free(dist);
  olm_model_free(model);
  olm_config_free(cfg);
  olm_train_config_free(tcfg);
}

// ---- DLPack

int g_deleted = 0;
void count_delete(DLManagedTensor_*) { ++g_deleted; }

TEST(CapiDlpack, ExportSharesMemoryAndImportRoundTrips) {
  olm_tensor* t = floats({1, 2, 3, 4, 5, 6}, {2, 3});
  void* dl = nullptr;
  ASSERT_OK(olm_tensor_to_dlpack(t, &dl));
  auto* m = static_cast<DLManagedTensor_*>(dl);
  EXPECT_EQ(m->dl_tensor.ndim, 2);
  EXPECT_EQ(m->dl_tensor.shape[0], 2);
  EXPECT_EQ(m->dl_tensor.shape[1], 3);
  EXPECT_EQ(m->dl_tensor.device.device_type, 1);
  EXPECT_EQ(m->dl_tensor.dtype.code, 2);
  EXPECT_EQ(m->dl_tensor.dtype.bits, 32);
  EXPECT_EQ(m->dl_tensor.dtype.lanes, 1);
  // Zero-copy both ways: a write through DLPack shows in the olm tensor.
  static_cast<float*>(m->dl_tensor.data)[4] = 50;
  EXPECT_EQ(read<float>(t), (std::vector<float>{1, 2, 3, 4, 50, 6}));
  void* data = m->dl_tensor.data;
  // Import it back: the same memory, and the export outlives the first tensor.
  olm_tensor* back = nullptr;
  ASSERT_OK(olm_tensor_from_dlpack(dl, &back));
  olm_tensor_free(t);
  void* again = nullptr;
  ASSERT_OK(olm_tensor_to_dlpack(back, &again));
  auto* m2 = static_cast<DLManagedTensor_*>(again);
  EXPECT_EQ(m2->dl_tensor.data, data);
  olm_tensor_free(back);
  EXPECT_EQ(static_cast<float*>(m2->dl_tensor.data)[4], 50);  // still alive: m2 holds it
  m2->deleter(m2);
}

TEST(CapiDlpack, ImportTakesOwnershipAndCallsTheDeleterOnce) {
  std::vector<float> buffer{1, 2, 3, 4, 5, 6};
  int64_t shape[] = {3, 2};
  int64_t strides[] = {1, 3};  // the transpose of a row-major (2, 3)
  DLManagedTensor_ m{};
  m.dl_tensor.data = buffer.data();
  m.dl_tensor.device = {1, 0};
  m.dl_tensor.ndim = 2;
  m.dl_tensor.dtype = {2, 32, 1};
  m.dl_tensor.shape = shape;
  m.dl_tensor.strides = strides;
  m.deleter = count_delete;
  g_deleted = 0;
  olm_tensor* t = nullptr;
  ASSERT_OK(olm_tensor_from_dlpack(&m, &t));
  EXPECT_EQ(read<float>(t), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  buffer[0] = 10;  // zero-copy: the tensor reads the caller's memory
  EXPECT_EQ(read<float>(t)[0], 10);
  // A tensor built from it (a parameter write) does not keep it alive.
  EXPECT_EQ(g_deleted, 0);
  olm_tensor_free(t);
  EXPECT_EQ(g_deleted, 1);

  // byte_offset is honoured.
  int64_t shape1[] = {2};
  DLManagedTensor_ off{};
  off.dl_tensor.data = buffer.data();
  off.dl_tensor.device = {1, 0};
  off.dl_tensor.ndim = 1;
  off.dl_tensor.dtype = {2, 32, 1};
  off.dl_tensor.shape = shape1;
  off.dl_tensor.byte_offset = 2 * sizeof(float);
  off.deleter = count_delete;
  ASSERT_OK(olm_tensor_from_dlpack(&off, &t));
  EXPECT_EQ(read<float>(t), (std::vector<float>{3, 4}));
  olm_tensor_free(t);
  EXPECT_EQ(g_deleted, 2);

  // Refused imports leave the tensor with the caller: no deleter call, out untouched.
  g_deleted = 0;
  olm_tensor* out = sentinel<olm_tensor>();
  m.dl_tensor.dtype = {2, 64, 1};
  EXPECT_ERR(olm_tensor_from_dlpack(&m, &out), OLM_ERR_INVALID_ARGUMENT, "dl_managed_tensor: dtype (code 2, 64 bits");
  m.dl_tensor.dtype = {2, 32, 1};
  m.dl_tensor.ndim = 9;
  EXPECT_ERR(olm_tensor_from_dlpack(&m, &out), OLM_ERR_INVALID_ARGUMENT, "dl_managed_tensor: ndim 9");
  m.dl_tensor.ndim = 2;
  m.dl_tensor.device = {8, 0};
  EXPECT_ERR(olm_tensor_from_dlpack(&m, &out), OLM_ERR_INVALID_ARGUMENT, "dl_managed_tensor: device type 8");
  EXPECT_ERR(olm_tensor_from_dlpack(nullptr, &out), OLM_ERR_INVALID_ARGUMENT, "dl_managed_tensor: NULL");
  EXPECT_EQ(out, sentinel<olm_tensor>());
  EXPECT_EQ(g_deleted, 0);
  void* dl = nullptr;
  EXPECT_ERR(olm_tensor_to_dlpack(nullptr, &dl), OLM_ERR_INVALID_ARGUMENT, "tensor: NULL");
}

// DLPack into a parameter and out of one: the usual way to hand weights to another framework.
TEST(CapiDlpack, ParameterThroughDlpack) {
  olm_model* model = make_model(kModel);
  std::vector<float> buffer(32 * 32, 0.125f);
  int64_t shape[] = {32, 32};
  DLManagedTensor_ m{};
  m.dl_tensor.data = buffer.data();
  m.dl_tensor.device = {1, 0};
  m.dl_tensor.ndim = 2;
  m.dl_tensor.dtype = {2, 32, 1};
  m.dl_tensor.shape = shape;
  m.deleter = count_delete;
  g_deleted = 0;
  olm_tensor* t = nullptr;
  ASSERT_OK(olm_tensor_from_dlpack(&m, &t));
  ASSERT_OK(olm_model_set_parameter(model, kWq, t));
  olm_tensor_free(t);
  EXPECT_EQ(g_deleted, 1);  // the model copied the values
  buffer[0] = 7;
  EXPECT_EQ(get(model, kWq), std::vector<float>(32 * 32, 0.125f));
  olm_model_free(model);
}

// ---- Threads

TEST(CapiThreads, SetIsProcessWideAndValidated) {
  const int32_t original = olm_get_num_threads();
  EXPECT_GE(original, 1);
  EXPECT_ERR(olm_set_num_threads(0), OLM_ERR_INVALID_ARGUMENT, "num_threads: 0 is outside [1, 1024]");
  EXPECT_ERR(olm_set_num_threads(1025), OLM_ERR_INVALID_ARGUMENT, "num_threads: 1025");
  EXPECT_EQ(olm_get_num_threads(), original);
  // A thread that already ran library work sees a later change (ATen alone would keep its
  // first count on that thread), and so does a new thread.
  std::mutex mu;
  std::condition_variable cv;
  int phase = 0;
  int32_t before = 0, after = 0;
  std::thread worker([&] {
    before = olm_get_num_threads();
    std::unique_lock<std::mutex> lock(mu);
    phase = 1;
    cv.notify_all();
    cv.wait(lock, [&] { return phase == 2; });
    after = olm_get_num_threads();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return phase == 1; });
  }
  const int32_t target = original == 1 ? 2 : 1;
  ASSERT_OK(olm_set_num_threads(target));
  EXPECT_EQ(olm_get_num_threads(), target);
  {
    std::lock_guard<std::mutex> lock(mu);
    phase = 2;
  }
  cv.notify_all();
  worker.join();
  EXPECT_EQ(before, original);
  EXPECT_EQ(after, target);
  int32_t fresh = 0;
  std::thread([&] { fresh = olm_get_num_threads(); }).join();
  EXPECT_EQ(fresh, target);
  // Work still runs, with the same results.
  olm_model* model = make_model(kModel);
  const auto with_target = forward(model);
  ASSERT_OK(olm_set_num_threads(original));
  EXPECT_EQ(olm_get_num_threads(), original);
  const auto with_original = forward(model);
  ASSERT_EQ(with_target.size(), with_original.size());
  for (size_t i = 0; i < with_target.size(); ++i) ASSERT_NEAR(with_target[i], with_original[i], 1e-5) << i;
  olm_model_free(model);
}

// ---- loss_div_factor: 0 is unset (OLMo-core's None), 1 is a divisor like any other.

TEST(CapiLossDiv, ZeroIsUnsetAndOneIsADivisor) {
  const char* moe = R"({"name": "moe", "d_model": 32, "vocab_size": 64, "n_layers": 2,
     "block": {"name": "moe", "attention": {"n_heads": 4, "bias": false},
       "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2},
                            "lb_loss_weight": 0.01, "z_loss_weight": 0.001},
       "layer_norm": {"name": "rms", "bias": false}},
     "lm_head": {"bias": false}})";
  olm_model* model = make_model(moe);
  olm_tensor* x = ids(2, 8, 64);
  auto run = [&](double div, bool init = true) {
    olm_loss_options o;
    if (init) olm_loss_options_init(&o);
    else {
      std::memset(&o, 0, sizeof o);  // a caller that zero-fills the struct
      o.struct_size = sizeof o;
      o.ignore_index = -100;
    }
    o.loss_div_factor = div;
    olm_loss_result r{};
    r.struct_size = sizeof r;
    EXPECT_EQ(olm_model_loss(model, x, x, &o, &r), nullptr);
    const double values[3] = {r.loss_value, r.lb_loss_value, r.router_z_loss_value};
    olm_loss_result_free(&r);
    return std::vector<double>(values, values + 3);
  };
  olm_loss_options defaults;
  olm_loss_options_init(&defaults);
  EXPECT_EQ(defaults.loss_div_factor, 0.0);
  const auto unset = run(0.0);
  EXPECT_GT(unset[1], 0.0);
  EXPECT_GT(unset[2], 0.0);
  EXPECT_EQ(run(0.0, false), unset);
  // Unset divides the MoE losses by the 16 input tokens, and the LM loss by nothing.
  const auto by16 = run(16.0);
  EXPECT_NEAR(by16[0] * 16, unset[0], 1e-5);
  EXPECT_NEAR(by16[1], unset[1], 1e-7);
  EXPECT_NEAR(by16[2], unset[2], 1e-7);
  // 1 divides by exactly 1.
  const auto one = run(1.0);
  EXPECT_NEAR(one[0], unset[0], 1e-7);
  EXPECT_NEAR(one[1], unset[1] * 16, 1e-5);
  EXPECT_NEAR(one[2], unset[2] * 16, 1e-5);
  olm_loss_options o;
  olm_loss_options_init(&o);
  o.loss_div_factor = NAN;
  olm_loss_result r{};
  r.struct_size = sizeof r;
  EXPECT_ERR(olm_model_loss(model, x, x, &o, &r), OLM_ERR_INVALID_ARGUMENT, "options.loss_div_factor must be finite");
  olm_tensor_free(x);
  olm_model_free(model);
}

}  // namespace
