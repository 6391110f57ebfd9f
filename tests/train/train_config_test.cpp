// core/train/train_config.cpp: one validation whichever door (JSON, FlatBuffer, native),
// JSON that reads back, errors that name the source, the JSON path and what was expected.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "core/train/train_config.h"
#include "test_util.h"

namespace {

using olm::testing::expect_error;

olm::Config small_model() {
  return olm::Config::from_json(R"({"d_model": 16, "vocab_size": 50, "n_layers": 1,
    "block": {"attention": {"n_heads": 2, "bias": false, "rope": {"theta": 10000}},
      "feed_forward": {"hidden_size": 32, "bias": false}, "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

const char kTrainBase[] = R"({"sequence_length": 8, "global_batch_size": 32, "max_steps": 1)";

olm::train::TrainConfig train_json(const std::string& extra) {
  return olm::train::TrainConfig::from_json(kTrainBase + extra + "}");
}

std::vector<uint8_t> pack(const olm::fb::TrainConfigT& native) {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(olm::fb::TrainConfig::Pack(builder, &native), olm::train::kTrainConfigIdentifier);
  return {builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize()};
}

void expect_refused_by_every_door(const olm::fb::TrainConfigT& native, const std::string& needle) {
  SCOPED_TRACE(needle);
  expect_error([&] { olm::train::TrainConfig::from_native(native); }, olm::ErrorCode::kInvalidConfig, needle);
  const auto buffer = pack(native);
  expect_error([&] { olm::train::TrainConfig::from_flatbuffer(buffer.data(), buffer.size()); },
               olm::ErrorCode::kInvalidConfig, needle);
}

void expect_round_trip(const olm::train::TrainConfig& config) {
  const std::string json = config.to_json();
  const auto again = olm::train::TrainConfig::from_json(json);
  EXPECT_EQ(again.to_flatbuffer(), config.to_flatbuffer()) << json;
}

TEST(TrainConfigRules, ZLossZeroIsOffEverywhereAndALearningRateOfZeroIsAccepted) {
  using olm::ErrorCode;
  // OLMo-core's z_loss_multiplier is Optional (None: off); 0 is off too, as in olm_loss_options.
  const auto off = train_json(R"(, "z_loss_multiplier": 0)");
  EXPECT_FALSE(off.spec().z_loss_multiplier.has_value());
  expect_round_trip(off);
  EXPECT_EQ(train_json(R"(, "z_loss_multiplier": 1e-4)").spec().z_loss_multiplier, 1e-4);
  auto native = off.native();
  EXPECT_FALSE(olm::train::TrainConfig::from_native(native).spec().z_loss_multiplier.has_value());
  native.z_loss_multiplier = -1.0;
  expect_refused_by_every_door(native, "z_loss_multiplier must be finite and >= 0");
  native.z_loss_multiplier = flatbuffers::nullopt;
  native.max_grad_norm = 0.0;  // would zero every gradient: refused by JSON, buffer and native alike
  expect_refused_by_every_door(native, "max_grad_norm must be positive");
  expect_error([] { train_json(R"(, "max_grad_norm": 0)"); }, ErrorCode::kInvalidConfig, "max_grad_norm must be positive");
  // lr 0 (a frozen run; PyTorch and OLMo-core accept it) with the constant schedule, with none,
  // and with a warmup from 0.
  EXPECT_EQ(train_json(R"(, "optimizer": {"lr": 0}, "scheduler": {"name": "constant"})").spec().optimizer.lr, 0.0);
  EXPECT_EQ(train_json(R"(, "optimizer": {"lr": 0})").spec().optimizer.lr, 0.0);
  EXPECT_NO_THROW(train_json(R"(, "optimizer": {"lr": 0}, "scheduler": {"name": "cos_with_warmup", "warmup": 2})"));
  expect_error([] { train_json(R"(, "optimizer": {"lr": 0.001}, "scheduler": {"name": "cos_with_warmup", "warmup": 2, "warmup_min_lr": 0.01})"); },
               ErrorCode::kInvalidConfig, "scheduler.warmup_min_lr must be in [0, optimizer.lr] (got 0.01 with optimizer.lr 0.001)");
  expect_error([] { train_json(R"(, "optimizer": {"lr": 0.001}, "scheduler": {"name": "wsd", "warmup": 2, "decay_min_lr": 0.01})"); },
               ErrorCode::kInvalidConfig, "scheduler.decay_min_lr must be in [0, optimizer.lr]");
}

// OLMo-core's TransformerTensorParallelConfig and TransformerContextParallelConfig, and the
// sequence length both split (2 x cp chunks for zig-zag, then tp shards for sequence parallelism).
TEST(TrainConfigRules, TensorAndContextParallelSections) {
  const auto both = train_json(R"(, "tensor_parallel": {"degree": 2}, "context_parallel": {"degree": 2, "ring": {}})");
  EXPECT_EQ(both.spec().tp_degree, 2);
  EXPECT_EQ(both.spec().cp_degree, 2);
  EXPECT_EQ(both.spec().cp_style, "ring");
  EXPECT_EQ(both.spec().cp_load_balancer, "zig_zag");
  EXPECT_EQ(both.spec().sequence_multiple(), 8);
  expect_round_trip(both);
  const auto uly = train_json(R"(, "context_parallel": {"degree": 4, "uly": {}})");
  EXPECT_EQ(uly.spec().cp_style, "ulysses");
  EXPECT_EQ(uly.spec().sequence_multiple(), 4);
  EXPECT_EQ(train_json("").spec().sequence_multiple(), 1);

  const std::vector<std::pair<std::string, std::string>> refused{
      {R"(, "tensor_parallel": {"degree": 0})", "tensor_parallel.degree must be in [1, "},
      {R"(, "tensor_parallel": {"degree": 2, "enable_async": true})", "tensor_parallel.enable_async"},
      {R"(, "context_parallel": {"degree": 2})", "context_parallel: one of ring and uly must be given"},
      {R"(, "context_parallel": {"degree": 2, "ring": {}, "uly": {}})", "context_parallel: only one of ring and uly"},
      {R"(, "context_parallel": {"degree": -1, "uly": {}})", "context_parallel.degree must be in [1, "},
      {R"(, "context_parallel": {"degree": 2, "ring": {"head_stride": 2}})", "context_parallel.ring.head_stride"},
      {R"(, "context_parallel": {"degree": 2, "ring": {"load_balancer": "llama3"}})",
       "context_parallel.ring.load_balancer: unknown value 'llama3'"},
      {R"(, "context_parallel": {"degree": 8, "ring": {}})",
       "sequence_length 8 must be a multiple of 16: 2 x context_parallel.degree 8 (zig-zag chunks)"},
      {R"(, "context_parallel": {"degree": 2, "ring": {}}, "tensor_parallel": {"degree": 4})",
       "sequence_length 8 must be a multiple of 16: 2 x context_parallel.degree 2 (zig-zag chunks) x "
       "tensor_parallel.degree 4 (sequence parallelism)"},
      {R"(, "tensor_parallel": {"degree": 3})", "sequence_length 8 must be a multiple of 3: tensor_parallel.degree 3"},
  };
  for (const auto& [extra, needle] : refused) {
    expect_error([&] { train_json(extra); }, olm::ErrorCode::kInvalidConfig, needle);
  }
  // The FlatBuffer and native doors meet the same rules.
  auto native = train_json("").native();
  native.tensor_parallel = std::make_unique<olm::fb::TensorParallelConfigT>();
  native.tensor_parallel->degree = 3;
  expect_refused_by_every_door(native, "sequence_length 8 must be a multiple of 3");
}

TEST(TrainConfigRules, UnknownPresetNamesModelPreset) {
  expect_error([] { train_json(R"(, "model_preset": "olmo9_1T", "model_vocab_size": 100)"); },
               olm::ErrorCode::kInvalidConfig, "model_preset: unknown preset 'olmo9_1T' (known: ");
  EXPECT_TRUE(train_json(R"(, "model_preset": "olmo2_30M", "model_vocab_size": 100)").spec().model.has_value());
}

TEST(TrainConfigRules, StringsNumbersAndSequenceLengthsWhicheverDoor) {
  auto native = olm::train::TrainConfig::from_json(std::string(kTrainBase) + R"(, "save_folder": "runs",
      "data": {"paths": ["a.npy", "b.npy"]}, "optimizer": {"eps": 1e-17, "lr": 0.30000000000000004}})").native();
  native.model = std::make_unique<olm::fb::TransformerConfigT>(small_model().native());
  const auto good = olm::train::TrainConfig::from_native(native);
  expect_round_trip(good);  // 1e-17 was written as 0 and then refused
  EXPECT_EQ(olm::train::TrainConfig::from_json(good.to_json()).spec().optimizer.eps, 1e-17);
  native.save_folder = "runs\xff";
  expect_refused_by_every_door(native, "save_folder: not valid UTF-8 (byte 0xFF at offset 4)");
  native.save_folder = "runs";
  native.data->paths[1] = "b\xfe.npy";
  expect_refused_by_every_door(native, "data.paths[1]: not valid UTF-8");
  native.data->paths[1] = "b.npy";
  native.model->block->name = "\xc0\xae";  // an overlong '.'
  expect_refused_by_every_door(native, "model.block.name: not valid UTF-8");
  native.model->block->name = "reordered_norm";
  native.model->block->layer_norm->eps = 0.0;
  expect_refused_by_every_door(native, "block.layer_norm.eps must be a positive finite number");
  native.model->block->layer_norm->eps = 1e-6;
  // A sequence length whose FLOPs per token cannot be counted.
  native.sequence_length = native.global_batch_size = int64_t{1} << 60;
  native.rank_microbatch_size = flatbuffers::nullopt;
  expect_refused_by_every_door(native, "sequence_length (1152921504606846976) is too large");
}

TEST(TrainConfigErrors, NameTheSourceThePathAndWhatWasExpected) {
  using olm::ErrorCode;
  const std::string base = std::string(kTrainBase) + ",\n  ";
  auto parse = [&](const std::string& extra, const std::string& source = "") {
    olm::train::TrainConfig::from_json(base + extra + "}", source);
  };
  expect_error([&] { parse(R"("max_step": 10)"); }, ErrorCode::kParse,
               "train config JSON, line 2, column 3: unknown field 'max_step' in train config; did you mean 'max_steps'?");
  expect_error([&] { parse(R"("optimizer": {"lrr": 0.1})"); }, ErrorCode::kParse,
               "unknown field 'lrr' in 'optimizer'; did you mean 'lr'?");
  expect_error([&] { parse(R"("optimizer": {"group_overrides": [{"param": ["x"]}]})"); }, ErrorCode::kParse,
               "unknown field 'param' in 'optimizer.group_overrides[0]'; did you mean 'params'?");
  expect_error([&] { parse(R"("model": {"d_modle": 8})"); }, ErrorCode::kParse,
               "unknown field 'd_modle' in 'model'; did you mean 'd_model'?");
  expect_error([&] { parse(R"("optimizer": {"lr": "fast"})"); }, ErrorCode::kParse,
               "line 2, column 23: field 'optimizer.lr': expected a number, not the string \"fast\"");
  expect_error([&] { parse(R"("seed": 0.5)"); }, ErrorCode::kParse, "field 'seed': expected an integer, not 0.5");
  expect_error([&] { parse(R"("keep_last_n": 1.0)"); }, ErrorCode::kParse, "field 'keep_last_n': expected an integer, not 1.0");
  expect_error([&] { parse(R"("data": {"paths": "a.npy"})"); }, ErrorCode::kParse,
               "field 'data.paths': expected an array, not the string \"a.npy\"");
  expect_error([&] { parse(R"("data": {"paths": [1]})"); }, ErrorCode::kParse, "field 'data.paths[0]': expected a string, not 1");
  expect_error([&] { parse(R"("max_steps": 1)"); }, ErrorCode::kParse, "field 'max_steps' is set more than once");
  expect_error([&] { parse(R"("bogus": 1)", "runs/train.json"); }, ErrorCode::kParse,
               "runs/train.json, line 2, column 3: unknown field 'bogus' in train config; known fields: model, ");
  const std::string dir = olm::testing::temp_dir("train_config_errors");
  const std::string path = dir + "/train.json";
  std::ofstream(path) << base << R"("max_step": 10})";
  expect_error([&] { olm::train::TrainConfig::from_json_file(path); }, ErrorCode::kParse,
               path + ", line 2, column 3: unknown field 'max_step' in train config; did you mean 'max_steps'?");
  std::ofstream(path) << kTrainBase << "}";
  EXPECT_EQ(olm::train::TrainConfig::from_json_file(path).spec().sequence_length, 8);
  expect_error([&] { olm::train::TrainConfig::from_json_file(dir + "/nope.json"); }, ErrorCode::kIo, "nope.json: cannot open");
}

}  // namespace

// Fuzz finding 3 (fuzz/README.md): FlatBuffers' verifier checks a vector's length prefix for
// 4-byte alignment only, so an [int64] vector can sit at an address 4 mod 8 and unpacking it
// would load misaligned int64s. Built here with 4-byte elements under an int64 length.
TEST(TrainConfigFlatbuffer, RefusesAMisalignedInt64Vector) {
  bool misaligned_built = false;
  for (int pad = 0; pad < 2 && !misaligned_built; ++pad) {
    flatbuffers::FlatBufferBuilder builder;
    if (pad) builder.PushElement<uint32_t>(0);
    builder.StartVector(4, sizeof(uint32_t));
    for (uint32_t word : {0u, 0u, 7u, 0u}) builder.PushElement(word);  // two int64: 7, 0
    const flatbuffers::Offset<flatbuffers::Vector<int64_t>> masked(builder.EndVector(2));
    olm::fb::DataConfigBuilder data(builder);
    data.add_masked_token_ids(masked);
    const auto data_offset = data.Finish();
    olm::fb::TrainConfigBuilder config(builder);
    config.add_data(data_offset);
    builder.Finish(config.Finish(), olm::train::kTrainConfigIdentifier);
    // from_flatbuffer copies into malloc'd (16-aligned) memory: the offset decides.
    std::vector<uint8_t> buffer(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
    const auto* ids = flatbuffers::GetRoot<olm::fb::TrainConfig>(buffer.data())->data()->masked_token_ids();
    if (reinterpret_cast<uintptr_t>(ids->Data()) % 8 == 0) continue;
    misaligned_built = true;
    flatbuffers::Verifier verifier(buffer.data(), buffer.size());
    ASSERT_TRUE(verifier.VerifyBuffer<olm::fb::TrainConfig>(olm::train::kTrainConfigIdentifier));
    expect_error([&] { olm::train::TrainConfig::from_flatbuffer(buffer.data(), buffer.size()); },
                 olm::ErrorCode::kParse, "data.masked_token_ids is misaligned");
  }
  EXPECT_TRUE(misaligned_built);
}
