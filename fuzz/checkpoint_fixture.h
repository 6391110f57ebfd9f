// A tiny real checkpoint for the checkpoint fuzz target and its seeds: a one-layer model after
// one training step, saved as a single-process checkpoint (model.safetensors, optim.safetensors)
// and, from the same tensors, as a two-rank sharded one (rank0/rank1.safetensors holding
// contiguous halves of each flattened tensor, as checkpoint::save under a process group does).
// The fuzzed input replaces meta.olmk.
#pragma once
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "core/io/crc32.h"
#include "core/io/safetensors.h"
#include "core/model.h"
#include "olm_generated.h"

namespace olm::fuzz {

struct CheckpointFixture {
  std::shared_ptr<train::Trainer> trainer;
  std::string unsharded_dir;  // <root>/single/step1
  std::string sharded_dir;    // <root>/sharded/step1
  std::vector<uint8_t> unsharded_meta, sharded_meta;
};

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline uint32_t crc_of(const at::Tensor& t) {
  const auto c = t.contiguous();
  return io::crc32(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
}

inline CheckpointFixture make_checkpoint_fixture(const std::string& root) {
  const auto config = Config::from_json(R"({"d_model": 8, "vocab_size": 16, "n_layers": 1,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 2, "bias": false},
              "feed_forward": {"hidden_size": 16, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"bias": false}, "init_seed": 1})");
  const auto tc = train::TrainConfig::from_json(R"({"sequence_length": 4, "global_batch_size": 8,
      "rank_microbatch_size": 8, "max_steps": 2, "optimizer": {"name": "adamw", "lr": 0.01}})");
  CheckpointFixture f;
  auto model = std::make_shared<Model>(config, "cpu", ModelOptions{});
  f.trainer = std::make_shared<train::Trainer>(model, tc);
  f.trainer->train_batch(at::arange(8, at::kLong).remainder(16).reshape({2, 4}));
  f.unsharded_dir = checkpoint::save(*f.trainer, root + "/single", {0, 1}, 1);
  f.unsharded_meta = read_bytes(f.unsharded_dir + "/" + checkpoint::kMetaFile);

  // The sharded twin: same configs and counters, world_size 2, records without checksums,
  // shards with theirs.
  fb::CheckpointMetaT meta;
  flatbuffers::GetRoot<fb::CheckpointMeta>(f.unsharded_meta.data())->UnPackTo(&meta);
  f.sharded_dir = root + "/sharded/step1";
  ::mkdir((root + "/sharded").c_str(), 0755);
  ::mkdir(f.sharded_dir.c_str(), 0755);
  std::vector<std::pair<std::string, at::Tensor>> rank_tensors[2];
  auto add = [&](const std::string& group, const std::string& name, const at::Tensor& t) {
    const auto flat = t.detach().contiguous().reshape({-1});
    for (int64_t r = 0; r < 2; ++r) {
      const auto [b, e] = checkpoint::shard_range(flat.numel(), r, 2);
      if (b == e) continue;
      const std::string entry = (group == checkpoint::kModelFile ? "model/" : "optim/") + name;
      const auto slice = flat.slice(0, b, e).clone();
      rank_tensors[r].emplace_back(entry, slice);
      auto sh = std::make_unique<fb::TensorShardT>();
      sh->tensor = name;
      sh->group = group;
      sh->file = checkpoint::shard_file(r);
      sh->entry = entry;
      sh->offset = b;
      sh->numel = e - b;
      sh->crc32 = crc_of(slice);
      meta.shards.push_back(std::move(sh));
    }
  };
  for (auto& p : f.trainer->model().module().named_state()) add(checkpoint::kModelFile, p.name, *p.tensor);
  for (auto& [name, t] : f.trainer->optimizer().state()) add(checkpoint::kOptimFile, name, t);
  for (auto& r : meta.tensors) r->crc32 = 0;
  meta.world_size = 2;
  for (int r = 0; r < 2; ++r)
    io::save_safetensors(f.sharded_dir + "/" + checkpoint::shard_file(r), rank_tensors[r]);
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::CheckpointMeta::Pack(builder, &meta), checkpoint::kMetaIdentifier);
  f.sharded_meta.assign(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
  return f;
}

}  // namespace olm::fuzz
