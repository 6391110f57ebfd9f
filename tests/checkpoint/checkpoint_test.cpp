// core/checkpoint (single process): the metadata's own checksum, field checks on metadata
// written before it, refusals that name meta.olmk and the older checkpoint that would load,
// loads that fail leaving the trainer bit-identical.
// (Sharded checkpoints: sharded_test.cpp.)
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "core/checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/io/crc32.h"
#include "core/io/safetensors.h"
#include "core/io/utf8.h"
#include "core/train/trainer.h"
#include "test_util.h"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// ---- a tiny trainer ----

olm::Config model_config() {
  return olm::Config::from_json(R"({"d_model": 32, "vocab_size": 50, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
      "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

olm::train::TrainConfig train_config() {
  return olm::train::TrainConfig::from_json(R"({"sequence_length": 8, "global_batch_size": 32,
      "rank_microbatch_size": 32, "max_steps": 10, "optimizer": {"name": "adamw", "lr": 0.01}})");
}

at::Tensor batch(uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return at::randint(50, {4, 8}, g, at::kLong);
}

struct TrainRun {
  std::shared_ptr<olm::Model> model;
  std::unique_ptr<olm::train::Trainer> trainer;
};

TrainRun make_run(int64_t steps) {
  TrainRun r;
  r.model = std::make_shared<olm::Model>(model_config(), "cpu", olm::ModelOptions{});
  r.trainer = std::make_unique<olm::train::Trainer>(r.model, train_config());
  for (int64_t i = 0; i < steps; ++i) r.trainer->train_batch(batch(static_cast<uint64_t>(100 + i)));
  return r;
}

// Everything a load may change: parameters and buffers, optimizer state, counters, RNG.
std::map<std::string, at::Tensor> state_of(TrainRun& r) {
  std::map<std::string, at::Tensor> out;
  for (auto& p : r.model->module().named_state()) out["model/" + p.name] = p.tensor->detach().clone();
  for (auto& [name, t] : r.trainer->optimizer().state()) out["optim/" + name] = t.detach().clone();
  out["counters"] = at::tensor({r.trainer->step(), r.trainer->tokens_seen(), r.trainer->skipped_steps()});
  out["rng"] = at::detail::getDefaultCPUGenerator().get_state();
  return out;
}

void expect_same_state(const std::map<std::string, at::Tensor>& before, const std::map<std::string, at::Tensor>& after) {
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [name, t] : before) {
    ASSERT_TRUE(after.count(name)) << name << " disappeared";
    EXPECT_TRUE(t.sizes() == after.at(name).sizes() && at::equal(t, after.at(name))) << name << " changed";
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string meta_path(const std::string& dir) { return dir + "/" + olm::checkpoint::kMetaFile; }

olm::fb::CheckpointMetaT unpack_meta(const std::string& dir) {
  const std::string bytes = slurp(meta_path(dir));
  olm::fb::CheckpointMetaT meta;
  flatbuffers::GetRoot<olm::fb::CheckpointMeta>(bytes.data())->UnPackTo(&meta);
  return meta;
}

// Rewrites meta.olmk after `edit`: with a valid checksum trailer (a consistent file saying
// something wrong), or as a checkpoint written before metadata checksums (no trailer).
void edit_meta(const std::string& dir, const std::function<void(olm::fb::CheckpointMetaT&)>& edit,
               bool checksummed) {
  auto meta = unpack_meta(dir);
  edit(meta);
  if (checksummed) {
    const auto bytes = olm::checkpoint::encode_meta(meta);
    spit(meta_path(dir), std::string(bytes.begin(), bytes.end()));
  } else {
    flatbuffers::FlatBufferBuilder b;
    b.Finish(olm::fb::CheckpointMeta::Pack(b, &meta), olm::checkpoint::kMetaIdentifier);
    spit(meta_path(dir), std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize()));
  }
}

// A save folder holding step1 and step2 of a fresh run.
std::string two_checkpoints(const std::string& name) {
  const std::string folder = olm::testing::temp_dir(name);
  TrainRun r = make_run(1);
  olm::checkpoint::save(*r.trainer, folder, {0, 1}, 5);
  r.trainer->train_batch(batch(101));
  olm::checkpoint::save(*r.trainer, folder, {0, 2}, 5);
  return folder;
}

// Loading `dir` into a trained run must throw olm::Error with `code` and every needle, in valid
// UTF-8, and change nothing in the run.
std::string expect_refused(const std::string& dir, olm::ErrorCode code, const std::vector<std::string>& needles) {
  TrainRun r = make_run(1);  // with optimizer state, at another step than the checkpoints
  const auto before = state_of(r);
  std::string message;
  try {
    olm::checkpoint::load(*r.trainer, dir);
    ADD_FAILURE() << "loaded a damaged checkpoint " << dir;
  } catch (const olm::Error& e) {
    message = e.what();
    EXPECT_EQ(e.code(), code) << message;
    for (const auto& n : needles) EXPECT_THAT(message, HasSubstr(n));
    EXPECT_EQ(olm::io::valid_utf8(message), message) << "not valid UTF-8";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an olm::Error: " << e.what();
  }
  expect_same_state(before, state_of(r));
  return message;
}

// ---- the metadata's checksum ----

// A flipped byte in any scalar field (step, tokens seen, data position) or in the embedded
// train config (optimizer and scheduler settings) is caught by the metadata's own checksum,
// both when loading and when reading the metadata (olm resume reads it first to build the
// trainer); the refusal names meta.olmk and the older checkpoint that would load.
TEST(Checkpoint, FlippedMetaByteIsRefusedNamingMetaAndTheOlderStep) {
  const std::string folder = two_checkpoints("ckpt_flip");
  const std::string original = slurp(meta_path(folder + "/step2"));
  auto offsets = [&] {
    std::map<std::string, size_t> out;
    const auto* root = flatbuffers::GetRoot<olm::fb::CheckpointMeta>(original.data());
    const auto* base = reinterpret_cast<const uint8_t*>(original.data());
    for (const auto& [name, field] : std::vector<std::pair<std::string, flatbuffers::voffset_t>>{
             {"step", olm::fb::CheckpointMeta::VT_STEP},
             {"tokens_seen", olm::fb::CheckpointMeta::VT_TOKENS_SEEN},
             {"data_batch_in_epoch", olm::fb::CheckpointMeta::VT_DATA_BATCH_IN_EPOCH}}) {
      const uint8_t* at = reinterpret_cast<const flatbuffers::Table*>(root)->GetAddressOf(field);
      EXPECT_NE(at, nullptr) << name;
      if (at) out[name] = static_cast<size_t>(at - base);
    }
    const auto* train = root->train_config();
    // The middle of the train config: optimizer or scheduler settings.
    out["train_config"] = static_cast<size_t>(train->data() - base) + train->size() / 2;
    return out;
  }();
  for (const auto& [field, offset] : offsets) {
    SCOPED_TRACE(field);
    std::string bytes = original;
    bytes[offset] = static_cast<char>(bytes[offset] ^ 0x04);
    spit(meta_path(folder + "/step2"), bytes);
    const auto msg = expect_refused(folder, olm::ErrorCode::kParse,
                                    {folder + "/step2/meta.olmk", "checksum", "previous checkpoint '" + folder + "/step1' would load"});
    EXPECT_THAT(msg, Not(HasSubstr("model.safetensors")));
    EXPECT_THAT(msg, Not(HasSubstr("optim.safetensors")));
    olm::testing::expect_error([&] { olm::checkpoint::read_meta(folder); }, olm::ErrorCode::kParse,
                               "step2/meta.olmk': checksum mismatch");
  }
  // The untouched file loads, and the older one the refusal named does too.
  spit(meta_path(folder + "/step2"), original);
  TrainRun r = make_run(0);
  olm::checkpoint::load(*r.trainer, folder);
  EXPECT_EQ(r.trainer->step(), 2);
  olm::checkpoint::load(*r.trainer, folder + "/step1");
  EXPECT_EQ(r.trainer->step(), 1);
}

TEST(Checkpoint, DamagedChecksumTrailer) {
  const std::string folder = two_checkpoints("ckpt_trailer");
  const std::string dir = folder + "/step2";
  const std::string original = slurp(meta_path(dir));
  // Its mark damaged, the file reads as one written before checksums: the buffer before the
  // trailer is intact then, and loads.
  std::string bytes = original;
  bytes[bytes.size() - 1] = 'X';
  spit(meta_path(dir), bytes);
  {
    TrainRun r = make_run(0);
    olm::checkpoint::load(*r.trainer, dir);
    EXPECT_EQ(r.trainer->step(), 2);
  }
  // Cut short: the recorded length disagrees.
  bytes = original;
  bytes.erase(bytes.size() - 20, 4);
  spit(meta_path(dir), bytes);
  expect_refused(dir, olm::ErrorCode::kParse, {dir + "/meta.olmk", "trailer", "previous checkpoint"});
  // The checksum itself damaged.
  bytes = original;
  bytes[bytes.size() - 6] = static_cast<char>(bytes[bytes.size() - 6] ^ 1);
  spit(meta_path(dir), bytes);
  expect_refused(dir, olm::ErrorCode::kParse, {dir + "/meta.olmk", "checksum mismatch"});
}

// Checkpoints written before metadata checksums (no trailer, no flag) still load and continue
// the run exactly.
TEST(Checkpoint, MetadataWithoutChecksumStillLoads) {
  const std::string folder = two_checkpoints("ckpt_old");
  TrainRun reference = make_run(0);
  olm::checkpoint::load(*reference.trainer, folder);
  const double want = reference.trainer->train_batch(batch(7)).loss;
  edit_meta(folder + "/step2", [](olm::fb::CheckpointMetaT&) {}, false);
  ASSERT_NE(slurp(meta_path(folder + "/step2")).substr(slurp(meta_path(folder + "/step2")).size() - 4), "OKC1");
  TrainRun r = make_run(0);
  const auto position = olm::checkpoint::load(*r.trainer, folder);
  EXPECT_EQ(position.batch_in_epoch, 2);
  EXPECT_EQ(r.trainer->step(), 2);
  EXPECT_EQ(r.trainer->train_batch(batch(7)).loss, want);
  EXPECT_EQ(olm::checkpoint::read_meta(folder).step, 2);
}

// ---- field checks (all that protects metadata written before checksums; with a checksum,
// a consistent file saying something impossible) ----

TEST(Checkpoint, ImpossibleFieldsAreRefusedByName) {
  const std::string folder = two_checkpoints("ckpt_fields");
  const std::string dir = folder + "/step2";
  const std::string original = slurp(meta_path(dir));
  struct Case {
    std::string field;
    std::function<void(olm::fb::CheckpointMetaT&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"step", [](auto& m) { m.step = -3; }, "field 'step' is -3"},
      {"step", [](auto& m) { m.step = 7; }, "field 'step' is 7 but the directory is step2"},
      {"tokens_seen", [](auto& m) { m.tokens_seen = -64; }, "field 'tokens_seen' is -64"},
      {"tokens_seen", [](auto& m) { m.tokens_seen = 1; }, "field 'tokens_seen' is 1"},
      {"skipped_steps", [](auto& m) { m.skipped_steps = 5; }, "field 'skipped_steps' is 5"},
      {"data_epoch", [](auto& m) { m.data_epoch = -1; }, "field 'data_epoch' is -1"},
      {"data_batch_in_epoch", [](auto& m) { m.data_batch_in_epoch = -2; }, "field 'data_batch_in_epoch' is -2"},
      {"world_size", [](auto& m) { m.world_size = -1; }, "field 'world_size' is -1"},
      {"train_config",
       [](auto& m) {
         olm::fb::TrainConfigT t;
         flatbuffers::GetRoot<olm::fb::TrainConfig>(m.train_config.data())->UnPackTo(&t);
         t.optimizer->beta1 = 7.5;  // a scalar optimizer setting out of its range
         flatbuffers::FlatBufferBuilder b;
         b.Finish(olm::fb::TrainConfig::Pack(b, &t), olm::train::kTrainConfigIdentifier);
         m.train_config.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
       },
       "field 'train_config' is not a valid train config: optimizer.beta1"},
      {"train_config", [](auto& m) { m.train_config.resize(m.train_config.size() / 2); },
       "field 'train_config' is not a valid train config"},
      {"model_config", [](auto& m) { m.model_config.resize(m.model_config.size() / 2); },
       "field 'model_config' is not a valid model config"},
      {"recent_losses", [](auto& m) { m.recent_losses.assign(500, 1.0); }, "field 'recent_losses'"},
      {"tensors", [](auto& m) { m.tensors[0]->file = "model\xff\xfe.safetensors"; },
       "field 'tensors[0].file' is 'model\\xff\\xfe.safetensors'"},
      {"tensors", [](auto& m) { m.tensors[1]->dtype = "float\xc3"; }, "field 'tensors[1].dtype'"},
  };
  for (bool checksummed : {false, true}) {
    for (const auto& c : cases) {
      SCOPED_TRACE(c.needle + (checksummed ? " (with checksum)" : " (no checksum)"));
      spit(meta_path(dir), original);
      edit_meta(dir, c.edit, checksummed);
      expect_refused(dir, olm::ErrorCode::kParse, {dir + "/meta.olmk", c.needle, "previous checkpoint '" + folder + "/step1'"});
      // Reading the metadata alone (what olm resume does first) refuses it too.
      try {
        olm::checkpoint::read_meta(dir);
        ADD_FAILURE() << "read_meta accepted it";
      } catch (const olm::Error& e) {
        EXPECT_THAT(e.what(), HasSubstr(dir + "/meta.olmk"));
        EXPECT_THAT(e.what(), HasSubstr(c.needle));
        EXPECT_EQ(olm::io::valid_utf8(e.what()), std::string(e.what()));
      }
    }
  }
}

// A damaged RNG state is named as meta.olmk's field, in olm's words: LibTorch's own refusal
// (its text, no file) would come only after the weights had been replaced.
TEST(Checkpoint, BadRngStateIsNamedBeforeAnythingChanges) {
  const std::string folder = two_checkpoints("ckpt_rng");
  const std::string dir = folder + "/step2";
  const std::string original = slurp(meta_path(dir));
  for (bool checksummed : {false, true}) {
    spit(meta_path(dir), original);
    edit_meta(dir, [](auto& m) { m.rng_state.resize(m.rng_state.size() - 5); }, checksummed);
    auto msg = expect_refused(dir, olm::ErrorCode::kParse, {dir + "/meta.olmk", "field 'rng_state'", "bytes"});
    EXPECT_THAT(msg, Not(HasSubstr("Expected either")));
    // The right size, but the Mersenne Twister's position (bytes 8..15: left, seeded) is zero.
    spit(meta_path(dir), original);
    edit_meta(dir, [](auto& m) { std::fill(m.rng_state.begin() + 8, m.rng_state.begin() + 16, 0); }, checksummed);
    msg = expect_refused(dir, olm::ErrorCode::kParse, {dir + "/meta.olmk", "field 'rng_state'"});
    EXPECT_THAT(msg, Not(HasSubstr("mt19937")));
  }
}

// ---- loads that fail part-way ----

// Rewrites one optimizer state tensor of a checkpoint (optim.safetensors and its record in
// meta.olmk, checksums included): a checkpoint that is consistent, with model.safetensors
// intact, whose optimizer state does not fit the trainer.
void edit_optim(const std::string& dir, const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
  const std::string path = dir + "/" + olm::checkpoint::kOptimFile;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    olm::io::SafetensorsFile file(path);
    for (const auto& e : file.entries()) tensors.emplace_back(e.name, file.read(e));
  }
  edit(tensors);
  olm::io::save_safetensors(path, tensors);
  edit_meta(dir, [&](olm::fb::CheckpointMetaT& m) {
    std::vector<std::unique_ptr<olm::fb::TensorRecordT>> records;
    for (auto& r : m.tensors)
      if (r->file != olm::checkpoint::kOptimFile) records.push_back(std::move(r));
    for (const auto& [name, t] : tensors) {
      auto r = std::make_unique<olm::fb::TensorRecordT>();
      r->name = name;
      r->file = olm::checkpoint::kOptimFile;
      r->dtype = c10::toString(t.scalar_type());
      r->shape = t.sizes().vec();
      const auto c = t.contiguous();
      r->crc32 = olm::io::crc32(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
      records.push_back(std::move(r));
    }
    m.tensors = std::move(records);
  }, true);
}

// The optimizer state is applied after the weights: a state that does not fit (the wrong
// shape, a missing piece, state another optimizer keeps) is refused before either changes,
// so every parameter, optimizer state, counter and the RNG stay bit-identical.
TEST(Checkpoint, LoadFailingInTheOptimizerStateLeavesTheTrainerBitIdentical) {
  const std::string folder = two_checkpoints("ckpt_partial");
  const std::string dir = folder + "/step2";
  const std::string meta = slurp(meta_path(dir));
  const std::string optim = slurp(dir + "/" + olm::checkpoint::kOptimFile);
  auto reset = [&] {
    spit(meta_path(dir), meta);
    spit(dir + "/" + olm::checkpoint::kOptimFile, optim);
  };
  // The last tensor in the file: every weight would have been copied before it on main.
  edit_optim(dir, [](auto& ts) {
    for (auto& [name, t] : ts)
      if (name == "lm_head.w_out.weight.exp_avg") t = t.reshape({-1});
  });
  expect_refused(dir, olm::ErrorCode::kMismatch, {"optimizer state 'lm_head.w_out.weight.exp_avg' has shape"});
  reset();
  edit_optim(dir, [](auto& ts) {
    for (size_t i = 0; i < ts.size(); ++i)
      if (ts[i].first == "lm_head.w_out.weight.exp_avg_sq") ts.erase(ts.begin() + static_cast<long>(i));
  });
  expect_refused(dir, olm::ErrorCode::kMismatch, {"optimizer state 'lm_head.w_out.weight.exp_avg_sq' is missing"});
  reset();
  edit_optim(dir, [](auto& ts) {
    ts.emplace_back("lm_head.w_out.weight.momentum_buffer", ts.back().second.clone());
  });
  expect_refused(dir, olm::ErrorCode::kMismatch, {"'lm_head.w_out.weight.momentum_buffer' is not state"});
  reset();
  // A tensor whose bytes are damaged in optim.safetensors (model.safetensors fine).
  std::string bytes = optim;
  bytes[bytes.size() - 3] = static_cast<char>(bytes[bytes.size() - 3] ^ 0x10);
  spit(dir + "/" + olm::checkpoint::kOptimFile, bytes);
  expect_refused(dir, olm::ErrorCode::kParse, {"optim.safetensors", "checksum", "previous checkpoint '" + folder + "/step1'"});
  reset();
  TrainRun r = make_run(0);
  olm::checkpoint::load(*r.trainer, dir);
  EXPECT_EQ(r.trainer->step(), 2);
}

}  // namespace
