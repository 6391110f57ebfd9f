// The training, data and generation parts of the C ABI, as a C caller uses them.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

using olm_testing::consume;

const char* kModel = R"({"d_model": 32, "vocab_size": 64, "n_layers": 2,
  "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000},
    "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "feed_forward": {"hidden_size": 96, "bias": false},
    "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
  "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";

std::string train_json(const std::string& extra = "") {
  return std::string(R"({"model": )") + kModel +
         R"(, "sequence_length": 8, "global_batch_size": 32, "rank_microbatch_size": 16, "max_steps": 6,
         "max_grad_norm": 1.0, "optimizer": {"name": "adamw", "lr": 0.01},
         "scheduler": {"name": "cos_with_warmup", "warmup": 2})" +
         extra + "}";
}


struct Fixture : ::testing::Test {
  olm_train_config* tcfg = nullptr;
  olm_config* cfg = nullptr;
  olm_model* model = nullptr;
  olm_trainer* trainer = nullptr;

  void SetUp() override {
    const std::string json = train_json();
    ASSERT_OK(olm_train_config_from_json(json.data(), json.size(), &tcfg));
    ASSERT_OK(olm_train_config_model(tcfg, &cfg));
    ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
    ASSERT_OK(olm_trainer_create(model, tcfg, &trainer));
  }
  void TearDown() override {
    olm_trainer_free(trainer);
    olm_model_free(model);
    olm_config_free(cfg);
    olm_train_config_free(tcfg);
  }
};

olm_tensor* ids_tensor(const std::vector<int64_t>& ids, int64_t rows, int64_t cols) {
  olm_tensor* t = nullptr;
  int64_t shape[2] = {rows, cols};
  olm_error* err = olm_tensor_create(OLM_DTYPE_INT64, shape, 2, ids.data(), ids.size() * 8, &t);
  EXPECT_EQ(err, nullptr) << olm_error_message(err);
  olm_error_free(err);
  return t;
}

std::vector<int64_t> pattern(int64_t n, int64_t offset = 0) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (i * 7 + offset) % 61;
  return v;
}

TEST(CapiTrainConfig, RoundTripsAndNamesBadFields) {
  const std::string json = train_json();
  olm_train_config* tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(json.data(), json.size(), &tcfg));
  olm_buffer* fb = nullptr;
  ASSERT_OK(olm_train_config_to_flatbuffer(tcfg, &fb));
  olm_train_config* again = nullptr;
  ASSERT_OK(olm_train_config_from_flatbuffer(olm_buffer_data(fb), olm_buffer_size(fb), &again));
  olm_buffer* fb2 = nullptr;
  ASSERT_OK(olm_train_config_to_flatbuffer(again, &fb2));
  ASSERT_EQ(olm_buffer_size(fb), olm_buffer_size(fb2));
  EXPECT_EQ(0, std::memcmp(olm_buffer_data(fb), olm_buffer_data(fb2), olm_buffer_size(fb)));
  // The model config's buffer is not a train config.
  olm_buffer* model_fb = nullptr;
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_train_config_model(tcfg, &cfg));
  ASSERT_OK(olm_config_to_flatbuffer(cfg, &model_fb));
  olm_train_config* wrong = nullptr;
  int32_t code = 0;
  EXPECT_THAT(consume(olm_train_config_from_flatbuffer(olm_buffer_data(model_fb), olm_buffer_size(model_fb), &wrong), &code),
              HasSubstr("OLMT"));
  EXPECT_EQ(code, OLM_ERR_PARSE);
  EXPECT_EQ(wrong, nullptr);
  olm_buffer_free(model_fb);
  olm_config_free(cfg);
  olm_buffer_free(fb);
  olm_buffer_free(fb2);
  olm_train_config_free(again);
  olm_train_config_free(tcfg);

  struct Case {
    std::string extra;
    int32_t code;
    std::string needle;
  };
  for (const auto& c : std::vector<Case>{
           {R"(, "bogus": 1)", OLM_ERR_PARSE, "bogus"},
           {R"(, "seed": "x")", OLM_ERR_PARSE, "seed"},
           {R"(, "ac_mode": "sometimes")", OLM_ERR_INVALID_CONFIG, "ac_mode"},
           {R"(, "keep_last_n": 0)", OLM_ERR_INVALID_CONFIG, "keep_last_n"},
           {R"(, "autocast_precision": "fp8")", OLM_ERR_INVALID_CONFIG, "autocast_precision"},
           {R"(, "data": {"paths": ["x.npy"], "generate_doc_lengths": true})", OLM_ERR_INVALID_CONFIG,
            "data.generate_doc_lengths requires data.eos_token_id"},
       }) {
    const std::string bad = train_json(c.extra);
    olm_train_config* out = reinterpret_cast<olm_train_config*>(0x1);
    int32_t got = 0;
    EXPECT_THAT(consume(olm_train_config_from_json(bad.data(), bad.size(), &out), &got), HasSubstr(c.needle));
    EXPECT_EQ(got, c.code) << c.extra;
    EXPECT_EQ(out, reinterpret_cast<olm_train_config*>(0x1)) << "out must be untouched on error";
  }
  const std::string mismatched = R"({"sequence_length": 8, "global_batch_size": 30})";
  olm_train_config* out = nullptr;
  EXPECT_THAT(consume(olm_train_config_from_json(mismatched.data(), mismatched.size(), &out), &code),
              HasSubstr("global_batch_size"));
  EXPECT_EQ(code, OLM_ERR_INVALID_CONFIG);
  EXPECT_EQ(consume(olm_train_config_from_json(nullptr, 0, &out), &code), "text: NULL");
}

// A step with documents: its loss is the model's masked mean loss on the batch (before the
// update), a NULL cu_doc_lens is a plain step, and broken boundaries change nothing.
TEST_F(Fixture, StepWithDocumentsUsesTheMaskedLoss) {
  auto tokens = pattern(32);
  auto* ids = ids_tensor(tokens, 4, 8);
  std::vector<int64_t> shifted(32, -100);
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < 7; ++t) shifted[static_cast<size_t>(r * 8 + t)] = tokens[static_cast<size_t>(r * 8 + t + 1)];
  auto* labels = ids_tensor(shifted, 4, 8);
  const std::vector<int32_t> cu = {0, 3, 8, 16, 17, 24, 28, 32};
  int64_t cu_shape[1] = {8};
  olm_tensor* cu_t = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT32, cu_shape, 1, cu.data(), cu.size() * 4, &cu_t));
  olm_loss_options lo;
  olm_loss_options_init(&lo);
  lo.cu_doc_lens = cu_t;
  olm_loss_result masked{};
  masked.struct_size = sizeof masked;
  ASSERT_OK(olm_model_loss(model, ids, labels, &lo, &masked));
  olm_loss_result_free(&masked);

  olm_step_metrics m{};
  m.struct_size = sizeof m;
  int32_t code = 0;
  const std::vector<int64_t> crossing = {0, 12, 32};
  int64_t crossing_shape[1] = {3};
  olm_tensor* crossing_t = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, crossing_shape, 1, crossing.data(), 24, &crossing_t));
  EXPECT_THAT(consume(olm_trainer_step_documents(trainer, ids, nullptr, crossing_t, &m), &code),
              HasSubstr("cu_doc_lens: every row must start a document"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(m.step, 0) << "a refused batch takes no step";
  ASSERT_OK(olm_trainer_step_documents(trainer, ids, nullptr, cu_t, &m));
  EXPECT_EQ(m.step, 1);
  EXPECT_NEAR(m.loss, masked.loss_value, 1e-5 * masked.loss_value);
  olm_step_metrics plain{};
  plain.struct_size = sizeof plain;
  ASSERT_OK(olm_trainer_step_documents(trainer, ids, nullptr, nullptr, &plain));
  EXPECT_EQ(plain.step, 2);
  for (auto* t : {ids, labels, cu_t, crossing_t}) olm_tensor_free(t);
}

TEST_F(Fixture, StepsTrainAndRejectBadBatches) {
  olm_step_metrics m{};
  m.struct_size = sizeof m;
  auto* ids = ids_tensor(pattern(32), 4, 8);
  double first = 0, last = 0;
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &m));
    EXPECT_EQ(m.step, i + 1);
    EXPECT_EQ(m.tokens, 32);
    EXPECT_EQ(m.tokens_seen, 32 * (i + 1));
    EXPECT_TRUE(std::isfinite(m.loss) && std::isfinite(m.grad_norm));
    EXPECT_EQ(m.skipped, 0);
    if (i == 0) first = m.loss;
    last = m.loss;
  }
  EXPECT_LT(last, first) << "six steps on one batch must lower its loss";

  int32_t code = 0;
  auto* wrong_shape = ids_tensor(pattern(32), 2, 16);
  olm_step_metrics untouched{};
  untouched.struct_size = sizeof untouched;
  untouched.step = 1234;
  EXPECT_THAT(consume(olm_trainer_step(trainer, wrong_shape, nullptr, &untouched), &code), HasSubstr("sequence_length"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(untouched.step, 1234);
  auto bad_ids = pattern(32);
  bad_ids[3] = 64;
  auto* oov = ids_tensor(bad_ids, 4, 8);
  EXPECT_THAT(consume(olm_trainer_step(trainer, oov, nullptr, &m), &code), HasSubstr("vocabulary"));
  EXPECT_THAT(consume(olm_trainer_step(nullptr, ids, nullptr, &m), &code), HasSubstr("trainer"));
  EXPECT_THAT(consume(olm_trainer_step(trainer, ids, nullptr, nullptr), &code), HasSubstr("out"));
  olm_step_metrics zero{};
  EXPECT_THAT(consume(olm_trainer_step(trainer, ids, nullptr, &zero), &code), HasSubstr("struct_size"));
  olm_tensor_free(ids);
  olm_tensor_free(wrong_shape);
  olm_tensor_free(oov);
}

TEST_F(Fixture, CheckpointRoundTripAndRefusals) {
  const std::string dir = olm_testing::temp_dir("capi_train_ckpt");
  auto* ids = ids_tensor(pattern(32), 4, 8);
  olm_step_metrics m{};
  m.struct_size = sizeof m;
  ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &m));
  olm_buffer* path = nullptr;
  ASSERT_OK(olm_trainer_save_checkpoint(trainer, dir.c_str(), &path));
  EXPECT_THAT(std::string(reinterpret_cast<const char*>(olm_buffer_data(path))), HasSubstr("step1"));
  olm_buffer_free(path);
  ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &m));
  const double expected = m.loss;

  olm_model* model2 = nullptr;
  olm_model_options mo;
  olm_model_options_init(&mo);
  mo.init_weights = 0;
  ASSERT_OK(olm_model_create(cfg, "cpu", &mo, &model2));
  olm_trainer* trainer2 = nullptr;
  ASSERT_OK(olm_trainer_create(model2, tcfg, &trainer2));
  ASSERT_OK(olm_trainer_load_checkpoint(trainer2, dir.c_str()));
  olm_step_metrics m2{};
  m2.struct_size = sizeof m2;
  ASSERT_OK(olm_trainer_step(trainer2, ids, nullptr, &m2));
  EXPECT_EQ(m2.step, 2);
  EXPECT_EQ(m2.loss, expected) << "a resumed step must be bit-identical";

  int32_t code = 0;
  EXPECT_THAT(consume(olm_trainer_load_checkpoint(trainer2, (dir + "/nope").c_str()), &code), HasSubstr("no checkpoint"));
  EXPECT_EQ(code, OLM_ERR_IO);
  // A checkpoint of another model config is refused.
  std::string other_model = kModel;
  other_model.replace(other_model.find("\"d_model\": 32"), 13, "\"d_model\": 48");
  const std::string other_json = std::string(R"({"model": )") + other_model +
                                 R"(, "sequence_length": 8, "global_batch_size": 32})";
  olm_train_config* other_tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(other_json.data(), other_json.size(), &other_tcfg));
  olm_config* other_cfg = nullptr;
  ASSERT_OK(olm_train_config_model(other_tcfg, &other_cfg));
  olm_model* other_model_h = nullptr;
  ASSERT_OK(olm_model_create(other_cfg, "cpu", nullptr, &other_model_h));
  olm_trainer* other_trainer = nullptr;
  ASSERT_OK(olm_trainer_create(other_model_h, other_tcfg, &other_trainer));
  EXPECT_THAT(consume(olm_trainer_load_checkpoint(other_trainer, dir.c_str()), &code), HasSubstr("different model config"));
  EXPECT_EQ(code, OLM_ERR_MISMATCH);
  // A trainer whose train config names another model is refused at creation.
  olm_trainer* mismatched = nullptr;
  EXPECT_THAT(consume(olm_trainer_create(model, other_tcfg, &mismatched), &code), HasSubstr("differs"));
  EXPECT_EQ(code, OLM_ERR_INVALID_CONFIG);
  EXPECT_EQ(mismatched, nullptr);
  // Corrupting a tensor's bytes is caught by its checksum.
  {
    const std::string model_file = dir + "/step1/model.safetensors";
    std::fstream f(model_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<long>(f.tellg());
    f.seekp(size - 5);
    f.put('\x7f');
  }
  EXPECT_THAT(consume(olm_trainer_load_checkpoint(trainer2, (dir + "/step1").c_str()), &code), HasSubstr("checksum"));
  EXPECT_EQ(code, OLM_ERR_PARSE);
  olm_trainer_free(other_trainer);
  olm_model_free(other_model_h);
  olm_config_free(other_cfg);
  olm_train_config_free(other_tcfg);
  olm_trainer_free(trainer2);
  olm_model_free(model2);
  olm_tensor_free(ids);
}

// Damages a checkpoint's RNG state in place: the Mersenne Twister position (bytes 8..15 of
// LibTorch's 5056-byte CPU generator state, found by its FlatBuffers length prefix) zeroed.
// Without the metadata's checksum LibTorch refused it only after the weights, optimizer
// state and counters had been restored.
void zero_rng_position(const std::string& meta_path) {
  std::string bytes;
  {
    std::ifstream in(meta_path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string prefix("\xc0\x13\x00\x00", 4);  // 5056, little-endian
  const auto at = bytes.find(prefix);
  ASSERT_NE(at, std::string::npos) << "no RNG state in " << meta_path;
  for (size_t i = at + 4 + 8; i < at + 4 + 16; ++i) bytes[i] = 0;
  std::ofstream(meta_path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A checkpoint load refused through the C API leaves the trainer as it was: its next step is
// the one it would have taken (the same loss and step as a trainer restored to that point).
TEST_F(Fixture, FailedCheckpointLoadLeavesTheTrainerAsItWas) {
  const std::string dir = olm_testing::temp_dir("capi_ckpt_failed");
  const std::string good = olm_testing::temp_dir("capi_ckpt_good");
  auto* ids = ids_tensor(pattern(32), 4, 8);
  olm_step_metrics m{};
  m.struct_size = sizeof m;
  ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &m));
  ASSERT_OK(olm_trainer_save_checkpoint(trainer, dir.c_str(), nullptr));
  ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &m));
  ASSERT_OK(olm_trainer_save_checkpoint(trainer, good.c_str(), nullptr));
  zero_rng_position(dir + "/step1/meta.olmk");

  int32_t code = 0;
  const std::string message = consume(olm_trainer_load_checkpoint(trainer, dir.c_str()), &code);
  EXPECT_THAT(message, HasSubstr(dir + "/step1/meta.olmk"));
  EXPECT_EQ(code, OLM_ERR_PARSE) << message;
  olm_step_metrics after{};
  after.struct_size = sizeof after;
  ASSERT_OK(olm_trainer_step(trainer, ids, nullptr, &after));

  olm_model* model2 = nullptr;
  olm_model_options mo;
  olm_model_options_init(&mo);
  mo.init_weights = 0;
  ASSERT_OK(olm_model_create(cfg, "cpu", &mo, &model2));
  olm_trainer* trainer2 = nullptr;
  ASSERT_OK(olm_trainer_create(model2, tcfg, &trainer2));
  ASSERT_OK(olm_trainer_load_checkpoint(trainer2, good.c_str()));
  olm_step_metrics want{};
  want.struct_size = sizeof want;
  ASSERT_OK(olm_trainer_step(trainer2, ids, nullptr, &want));
  EXPECT_EQ(after.step, 3);
  EXPECT_EQ(after.step, want.step);
  EXPECT_EQ(after.loss, want.loss) << "the refused load changed the trainer";
  olm_trainer_free(trainer2);
  olm_model_free(model2);
  olm_tensor_free(ids);
}

TEST(CapiData, FromTokensFilesAndBatches) {
  olm_dataset_options o;
  olm_dataset_options_init(&o);
  o.sequence_length = 4;
  o.vocab_size = 10;
  o.eos_token_id = 9;
  const std::vector<int64_t> tokens = {1, 2, 9, 3, 4, 5, 6, 9, 7, 8, 1, 2, 3};
  olm_dataset* ds = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &ds));
  int64_t n_tokens = 0, n_instances = 0;
  ASSERT_OK(olm_dataset_size(ds, &n_tokens, &n_instances));
  EXPECT_EQ(n_tokens, 13);
  EXPECT_EQ(n_instances, 3);
  olm_batch b{};
  b.struct_size = sizeof b;
  const int64_t idx[2] = {0, 1};
  ASSERT_OK(olm_dataset_batch(ds, idx, 2, &b));
  int64_t ids[8], labels[8];
  int32_t cu[8] = {0};
  ASSERT_OK(olm_tensor_copy_to_host(b.input_ids, ids, sizeof ids));
  ASSERT_OK(olm_tensor_copy_to_host(b.labels, labels, sizeof labels));
  EXPECT_EQ(std::vector<int64_t>(ids, ids + 8), (std::vector<int64_t>{1, 2, 9, 3, 4, 5, 6, 9}));
  EXPECT_EQ(std::vector<int64_t>(labels, labels + 8), (std::vector<int64_t>{2, 9, 3, -100, 5, 6, 9, -100}));
  size_t cu_bytes = 0;
  ASSERT_OK(olm_tensor_nbytes(b.cu_doc_lens, &cu_bytes));
  ASSERT_OK(olm_tensor_copy_to_host(b.cu_doc_lens, cu, sizeof cu));
  // Instance 0: [1 2 9] [3]; instance 1: [4 5 6 9].
  EXPECT_EQ(std::vector<int32_t>(cu, cu + cu_bytes / 4), (std::vector<int32_t>{0, 3, 4, 8}));
  EXPECT_EQ(b.max_doc_len, 4);
  olm_batch_free(&b);
  EXPECT_EQ(b.input_ids, nullptr);
  olm_batch_free(nullptr);

  int32_t code = 0;
  const int64_t bad_idx[1] = {3};
  EXPECT_THAT(consume(olm_dataset_batch(ds, bad_idx, 1, &b), &code), HasSubstr("indices[0]"));
  const std::vector<int64_t> oov = {1, 2, 10, 3};
  olm_dataset* bad = nullptr;
  EXPECT_THAT(consume(olm_dataset_from_tokens(oov.data(), oov.size(), &o, &bad), &code), HasSubstr("tokens[2]"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  olm_dataset_free(ds);

  // Files: a raw uint16 file with an odd byte count, a missing file, and a good file.
  const std::string dir = olm_testing::temp_dir("capi_train_data");
  const std::string odd = dir + "/odd.bin", good = dir + "/good.bin";
  std::ofstream(odd, std::ios::binary) << "abc";
  {
    std::ofstream f(good, std::ios::binary);
    for (uint16_t t : {1, 2, 3, 4, 5, 6, 7, 8}) f.write(reinterpret_cast<const char*>(&t), 2);
  }
  const char* odd_paths[1] = {odd.c_str()};
  EXPECT_THAT(consume(olm_dataset_from_files(odd_paths, 1, &o, &bad), &code), HasSubstr("not a multiple of 2"));
  EXPECT_EQ(code, OLM_ERR_PARSE);
  const std::string missing = dir + "/missing.bin";
  const char* missing_paths[1] = {missing.c_str()};
  EXPECT_THAT(consume(olm_dataset_from_files(missing_paths, 1, &o, &bad), &code), HasSubstr("missing.bin"));
  EXPECT_EQ(code, OLM_ERR_IO);
  const char* good_paths[2] = {good.c_str(), good.c_str()};
  ASSERT_OK(olm_dataset_from_files(good_paths, 2, &o, &ds));
  ASSERT_OK(olm_dataset_size(ds, &n_tokens, &n_instances));
  EXPECT_EQ(n_tokens, 16);
  EXPECT_EQ(n_instances, 4);
  olm_dataset_free(ds);
  o.vocab_size = 5;
  EXPECT_THAT(consume(olm_dataset_from_files(good_paths, 1, &o, &bad), &code), HasSubstr("outside the vocabulary"));
  EXPECT_EQ(bad, nullptr);
}

struct FitLog {
  std::vector<double> losses;
  int stop_after = 1000;
  std::vector<std::string> messages;
};

int32_t on_step(const olm_step_metrics* m, void* user) {
  auto* log = static_cast<FitLog*>(user);
  log->losses.push_back(m->loss);
  return static_cast<int>(log->losses.size()) >= log->stop_after ? 1 : 0;
}

void on_log(const char* message, void* user) { static_cast<FitLog*>(user)->messages.push_back(message); }

// olm_fit_options.document_masking: -1 follows the config (no generate_doc_lengths here, so
// unmasked), 0 is unmasked, 1 masks documents (a different first loss); other values fail.
TEST(CapiFit, DocumentMaskingOption) {
  const std::string json = train_json();
  olm_train_config* tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(json.data(), json.size(), &tcfg));
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_train_config_model(tcfg, &cfg));
  olm_dataset_options o;
  olm_dataset_options_init(&o);
  o.sequence_length = 8;
  o.vocab_size = 64;
  o.eos_token_id = 5;
  std::vector<int64_t> tokens(8 * 8);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = i % 3 == 2 ? 5 : static_cast<int64_t>((i * 7 + 1) % 64);
  olm_dataset* data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &data));
  auto first_loss = [&](int32_t masking, int32_t* code) {
    olm_model* model = nullptr;
    EXPECT_EQ(olm_model_create(cfg, "cpu", nullptr, &model), nullptr);
    olm_trainer* trainer = nullptr;
    EXPECT_EQ(olm_trainer_create(model, tcfg, &trainer), nullptr);
    FitLog log;
    log.stop_after = 1;
    olm_fit_options fo;
    olm_fit_options_init(&fo);
    EXPECT_EQ(fo.document_masking, -1);
    fo.on_step = on_step;
    fo.user_data = &log;
    fo.document_masking = masking;
    olm_error* err = olm_trainer_fit(trainer, data, &fo, nullptr);
    *code = err ? olm_error_code(err) : 0;
    olm_error_free(err);
    olm_trainer_free(trainer);
    olm_model_free(model);
    return log.losses.empty() ? std::nan("") : log.losses[0];
  };
  int32_t code = 0;
  const double by_config = first_loss(-1, &code), off = first_loss(0, &code), on = first_loss(1, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(by_config, off);
  EXPECT_GT(std::abs(on - off), 1e-4);
  first_loss(2, &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  olm_dataset_free(data);
  olm_config_free(cfg);
  olm_train_config_free(tcfg);
}

TEST(CapiFit, TrainsEvaluatesStopsAndResumesTheDataOrder) {
  const std::string dir = olm_testing::temp_dir("capi_train_fit");
  const std::string json = train_json(R"(, "save_folder": ")" + dir + R"(", "eval_interval": 3, "eval_batches": 2,
      "metrics_path": ")" + dir + R"(/metrics.jsonl")");
  olm_train_config* tcfg = nullptr;
  ASSERT_OK(olm_train_config_from_json(json.data(), json.size(), &tcfg));
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_train_config_model(tcfg, &cfg));
  olm_dataset_options o;
  olm_dataset_options_init(&o);
  o.sequence_length = 8;
  o.vocab_size = 64;
  const auto tokens = pattern(8 * 40, 3);
  olm_dataset* data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &data));

  // Straight through 6 steps.
  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  olm_trainer* trainer = nullptr;
  ASSERT_OK(olm_trainer_create(model, tcfg, &trainer));
  FitLog full;
  olm_fit_options fo;
  olm_fit_options_init(&fo);
  fo.eval_data = data;
  fo.on_step = on_step;
  fo.on_log = on_log;
  fo.user_data = &full;
  olm_eval_metrics eval{};
  eval.struct_size = sizeof eval;
  ASSERT_OK(olm_trainer_fit(trainer, data, &fo, &eval));
  ASSERT_EQ(full.losses.size(), 6u);
  EXPECT_TRUE(std::isfinite(eval.loss) && eval.tokens > 0);
  EXPECT_NEAR(eval.perplexity, std::exp(eval.loss), 1e-9 * eval.perplexity);
  EXPECT_FALSE(full.messages.empty());
  olm_eval_metrics again{};
  again.struct_size = sizeof again;
  ASSERT_OK(olm_trainer_evaluate(trainer, data, 2, &again));
  EXPECT_EQ(again.loss, eval.loss);
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines;
  EXPECT_GE(lines, 6);

  // Stopped by the callback after 3 steps (a checkpoint is saved), then resumed in a new
  // trainer: the remaining losses equal the uninterrupted run's, because the data order and
  // every state continue exactly.
  const std::string dir2 = olm_testing::temp_dir("capi_train_fit2");
  const std::string json2 = train_json(R"(, "save_folder": ")" + dir2 + R"(")");
  olm_train_config* tcfg2 = nullptr;
  ASSERT_OK(olm_train_config_from_json(json2.data(), json2.size(), &tcfg2));
  olm_model* m1 = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &m1));
  olm_trainer* t1 = nullptr;
  ASSERT_OK(olm_trainer_create(m1, tcfg2, &t1));
  FitLog part;
  part.stop_after = 3;
  fo.eval_data = nullptr;
  fo.user_data = &part;
  ASSERT_OK(olm_trainer_fit(t1, data, &fo, nullptr));
  ASSERT_EQ(part.losses.size(), 3u);
  olm_model* m2 = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &m2));
  olm_trainer* t2 = nullptr;
  ASSERT_OK(olm_trainer_create(m2, tcfg2, &t2));
  ASSERT_OK(olm_trainer_load_checkpoint(t2, dir2.c_str()));
  FitLog rest;
  fo.user_data = &rest;
  ASSERT_OK(olm_trainer_fit(t2, data, &fo, nullptr));
  ASSERT_EQ(rest.losses.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(part.losses[static_cast<size_t>(i)], full.losses[static_cast<size_t>(i)]);
    EXPECT_EQ(rest.losses[static_cast<size_t>(i)], full.losses[static_cast<size_t>(i) + 3]);
  }

  int32_t code = 0;
  o.sequence_length = 4;
  olm_dataset* short_data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &short_data));
  EXPECT_THAT(consume(olm_trainer_fit(t2, short_data, nullptr, nullptr), &code), HasSubstr("sequence_length"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);

  for (auto* t : {trainer, t1, t2}) olm_trainer_free(t);
  for (auto* m : {model, m1, m2}) olm_model_free(m);
  olm_dataset_free(short_data);
  olm_dataset_free(data);
  olm_config_free(cfg);
  olm_train_config_free(tcfg);
  olm_train_config_free(tcfg2);
}

struct Stream {
  std::vector<int64_t> tokens;
  size_t stop_at = 1000;
};

int32_t on_token(int64_t token, void* user) {
  auto* s = static_cast<Stream*>(user);
  s->tokens.push_back(token);
  return s->tokens.size() >= s->stop_at ? 1 : 0;
}

TEST(CapiGenerate, StreamsStopsAndValidates) {
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_json(kModel, std::strlen(kModel), &cfg));
  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  auto* prompt = ids_tensor({1, 2, 3}, 1, 3);
  olm_generate_options g;
  olm_generate_options_init(&g);
  g.max_new_tokens = 12;
  g.temperature = 0;
  Stream s;
  g.on_token = on_token;
  g.user_data = &s;
  olm_tensor* out = nullptr;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  std::vector<int64_t> generated(12);
  ASSERT_OK(olm_tensor_copy_to_host(out, generated.data(), generated.size() * 8));
  EXPECT_EQ(generated, s.tokens);
  olm_tensor_free(out);
  // Without the cache the greedy tokens are the same.
  g.use_kv_cache = 0;
  Stream s2;
  g.user_data = &s2;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  EXPECT_EQ(s2.tokens, s.tokens);
  olm_tensor_free(out);
  // The callback stops generation; a stop token ends it after that token.
  Stream s3;
  s3.stop_at = 2;
  g.user_data = &s3;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  size_t n = 0;
  ASSERT_OK(olm_tensor_nbytes(out, &n));
  EXPECT_EQ(n, 16u);
  olm_tensor_free(out);
  const int64_t stop[1] = {s.tokens[4]};
  g.stop_tokens = stop;
  g.num_stop_tokens = 1;
  g.on_token = nullptr;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  ASSERT_OK(olm_tensor_nbytes(out, &n));
  const auto first = std::find(s.tokens.begin(), s.tokens.end(), s.tokens[4]) - s.tokens.begin();
  EXPECT_EQ(n, static_cast<size_t>(first + 1) * 8);
  olm_tensor_free(out);

  int32_t code = 0;
  g.num_stop_tokens = 0;
  g.temperature = -1;
  out = reinterpret_cast<olm_tensor*>(0x1);
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("temperature"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(out, reinterpret_cast<olm_tensor*>(0x1));
  g.temperature = 1;
  g.stop_tokens = nullptr;
  g.num_stop_tokens = 3;
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("stop_tokens"));
  EXPECT_THAT(consume(olm_model_generate(model, nullptr, nullptr, &out), &code), HasSubstr("prompt"));
  olm_tensor_free(prompt);
  olm_model_free(model);
  olm_config_free(cfg);
}

// A model mixing GatedDeltaNet and attention layers generates through the C API with the
// cache (the GatedDeltaNet layers' recurrent state) by default, and greedily gives the tokens
// of full recomputation.
TEST(CapiGenerate, GatedDeltaNetModelUsesTheCache) {
  const std::string block_tail = R"(, "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}})";
  const std::string json = R"({"d_model": 32, "vocab_size": 64, "n_layers": 3,
    "named_blocks": [{"name": "gdn", "block": {"attention": {"name": "gated_delta_net", "n_heads": 2, "n_v_heads": 4}
      )" + block_tail + R"(}, {"name": "attn", "block": {"attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}}
      )" + block_tail + R"(}],
    "block_pattern": ["gdn", "attn", "gdn"], "lm_head": {"bias": false}, "init_seed": 5})";
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_json(json.c_str(), json.size(), &cfg));
  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  auto* prompt = ids_tensor({7, 8, 9, 10}, 1, 4);
  olm_generate_options g;
  olm_generate_options_init(&g);
  ASSERT_EQ(g.use_kv_cache, 1);
  g.max_new_tokens = 10;
  g.temperature = 0;
  std::vector<int64_t> with_cache(10), without_cache(10);
  olm_tensor* out = nullptr;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  ASSERT_OK(olm_tensor_copy_to_host(out, with_cache.data(), with_cache.size() * 8));
  olm_tensor_free(out);
  g.use_kv_cache = 0;
  ASSERT_OK(olm_model_generate(model, prompt, &g, &out));
  ASSERT_OK(olm_tensor_copy_to_host(out, without_cache.data(), without_cache.size() * 8));
  olm_tensor_free(out);
  EXPECT_EQ(with_cache, without_cache);
  olm_tensor_free(prompt);
  olm_model_free(model);
  olm_config_free(cfg);
}

}  // namespace

// Issue #12: bad input at the C boundary never gets an internal error.

// Evaluation checks its dataset's ids against the model's vocabulary (as a step checks its
// input_ids), before any batch is evaluated, naming the argument, the instance and the id.
TEST_F(Fixture, Issue12EvaluateNamesTokenIdsOutsideTheVocabulary) {
  olm_dataset_options o;
  olm_dataset_options_init(&o);
  o.sequence_length = 8;
  o.vocab_size = 1000;  // the dataset's own bound; the model's vocabulary is 64
  auto tokens = pattern(8 * 8);
  tokens[8 * 5 + 3] = 64;  // instance 5; the model's vocabulary is [0, 64)
  olm_dataset* data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &data));
  olm_eval_metrics m{};
  m.struct_size = sizeof m;
  m.loss = 1234;
  int32_t code = 0;
  const std::string message = consume(olm_trainer_evaluate(trainer, data, 0, &m), &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT) << message;
  EXPECT_THAT(message, HasSubstr("data: instance 5 holds token id 64"));
  EXPECT_THAT(message, HasSubstr("vocabulary [0, 64)"));
  EXPECT_EQ(m.loss, 1234);
  // max_batches bounds what is checked (batches of 4 instances: instance 5 is in the second
  // batch, so one batch evaluates). Negative ids never get this far: the dataset refuses them.
  ASSERT_OK(olm_trainer_evaluate(trainer, data, 1, &m));
  EXPECT_TRUE(std::isfinite(m.loss));
  // fit's eval_data is checked the same way, under its own name.
  olm_fit_options fo;
  olm_fit_options_init(&fo);
  fo.eval_data = data;
  olm_dataset* good = nullptr;
  const auto train_tokens = pattern(8 * 40);
  ASSERT_OK(olm_dataset_from_tokens(train_tokens.data(), train_tokens.size(), &o, &good));
  const std::string fit_message = consume(olm_trainer_fit(trainer, good, &fo, nullptr), &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT) << fit_message;
  EXPECT_THAT(fit_message, HasSubstr("eval_data: instance 5 holds token id 64"));
  olm_dataset_free(data);
  olm_dataset_free(good);
}

// One struct_size rule for results: too small to hold the first field (0 included) is refused
// naming the argument, and nothing is written.
TEST_F(Fixture, Issue12ResultStructSizeTooSmallIsRefused) {
  olm_dataset_options o;
  olm_dataset_options_init(&o);
  o.sequence_length = 8;
  o.vocab_size = 64;
  const auto tokens = pattern(8 * 8);
  olm_dataset* data = nullptr;
  ASSERT_OK(olm_dataset_from_tokens(tokens.data(), tokens.size(), &o, &data));
  for (size_t size : {size_t{0}, sizeof(size_t), offsetof(olm_eval_metrics, loss) + 4}) {
    SCOPED_TRACE(size);
    olm_eval_metrics m;
    std::memset(&m, 0x5a, sizeof m);
    m.struct_size = size;
    int32_t code = 0;
    EXPECT_THAT(consume(olm_trainer_evaluate(trainer, data, 1, &m), &code), HasSubstr("out->struct_size"));
    EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
    const auto* bytes = reinterpret_cast<const unsigned char*>(&m);
    for (size_t i = sizeof(size_t); i < sizeof m; ++i) ASSERT_EQ(bytes[i], 0x5a) << "size " << size << " byte " << i;
  }
  auto* x = ids_tensor(pattern(32), 4, 8);
  olm_step_metrics s;
  std::memset(&s, 0x5a, sizeof s);
  s.struct_size = 0;
  int32_t code = 0;
  EXPECT_THAT(consume(olm_trainer_step(trainer, x, nullptr, &s), &code), HasSubstr("out->struct_size"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  // A step result covering `step` and half of `loss`: loss is not written.
  s.struct_size = offsetof(olm_step_metrics, loss) + 4;
  ASSERT_OK(olm_trainer_step(trainer, x, nullptr, &s));
  EXPECT_EQ(s.step, 1);
  EXPECT_EQ(s.struct_size, offsetof(olm_step_metrics, loss) + 4);
  const auto* bytes = reinterpret_cast<const unsigned char*>(&s);
  for (size_t i = offsetof(olm_step_metrics, loss); i < sizeof s; ++i) ASSERT_EQ(bytes[i], 0x5a) << "byte " << i;
  olm_tensor_free(x);
  olm_dataset_free(data);
}

// Generation's bad prompts and options are named as olm.h names them, never as the forward's
// input_ids, and are never internal errors.
TEST(CapiGenerate, Issue12NamesThePromptAndOptions) {
  olm_config* cfg = nullptr;
  ASSERT_OK(olm_config_from_json(kModel, std::strlen(kModel), &cfg));
  olm_model* model = nullptr;
  ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
  olm_tensor* out = reinterpret_cast<olm_tensor*>(static_cast<uintptr_t>(0x51));
  int32_t code = 0;
  const float fv[3] = {1, 2, 3};
  const int64_t shape1[1] = {3};
  olm_tensor* f = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, shape1, 1, fv, sizeof fv, &f));
  std::string message = consume(olm_model_generate(model, f, nullptr, &out), &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT) << message;
  EXPECT_THAT(message, HasSubstr("prompt: dtype must be int32 or int64"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("input_ids")));
  auto* oov = ids_tensor({1, 64, 3}, 1, 3);
  message = consume(olm_model_generate(model, oov, nullptr, &out), &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT) << message;
  EXPECT_THAT(message, HasSubstr("prompt: token id 64 is outside the vocabulary [0, 64)"));
  auto* two_rows = ids_tensor({1, 2, 3, 4}, 2, 2);
  message = consume(olm_model_generate(model, two_rows, nullptr, &out), &code);
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT) << message;
  EXPECT_THAT(message, HasSubstr("prompt:"));
  auto* prompt = ids_tensor({1, 2, 3}, 1, 3);
  olm_generate_options g;
  olm_generate_options_init(&g);
  g.top_p = 0;
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("options.top_p"));
  olm_generate_options_init(&g);
  g.max_new_tokens = -1;
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("options.max_new_tokens"));
  olm_generate_options_init(&g);
  g.temperature = std::nan("");
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("options.temperature"));
  olm_generate_options_init(&g);
  const int64_t stop[2] = {5, 99};
  g.stop_tokens = stop;
  g.num_stop_tokens = 2;
  EXPECT_THAT(consume(olm_model_generate(model, prompt, &g, &out), &code), HasSubstr("options.stop_tokens[1]: 99"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(out, reinterpret_cast<olm_tensor*>(static_cast<uintptr_t>(0x51)));
  for (auto* t : {f, oov, two_rows, prompt}) olm_tensor_free(t);
  olm_model_free(model);
  olm_config_free(cfg);
}
