// Checkpoint directories: <save_folder>/step<N>/ holding model.safetensors (OLMo-core names,
// loadable by OLMo-core unchanged), optim.safetensors and meta.olmk (FlatBuffers
// CheckpointMeta, identifier "OLMK": configs, counters, data position, RNG state and a tensor
// index with shapes, dtypes and CRC-32s). A checkpoint is written into a temporary directory,
// fsynced and renamed into place, so a crash at any moment leaves earlier ones intact.
#pragma once
#include <string>

#include "core/train/trainer.h"

namespace olm::checkpoint {

struct DataPosition {
  int64_t epoch = 0;
  int64_t batch_in_epoch = 0;
};

struct Meta {
  int32_t schema_version = 0;
  int64_t step = 0;
  int64_t tokens_seen = 0;
  int64_t skipped_steps = 0;
  Config model_config;
  train::TrainConfig train_config;
  DataPosition data;
};

inline constexpr char kMetaIdentifier[] = "OLMK";
inline constexpr char kModelFile[] = "model.safetensors";
inline constexpr char kOptimFile[] = "optim.safetensors";
inline constexpr char kMetaFile[] = "meta.olmk";

// Saves the trainer's state as <folder>/step<step>, then keeps the newest keep_last_n
// checkpoints. Returns the checkpoint's directory. Throws kIo naming the path on failure.
std::string save(train::Trainer& trainer, const std::string& folder, const DataPosition& data,
                 int64_t keep_last_n);

// The newest complete checkpoint under folder, or "" when there is none.
std::string latest(const std::string& folder);

// Reads and verifies a checkpoint's metadata. `path` is a step directory or a save folder
// (then its latest checkpoint).
Meta read_meta(const std::string& path);

// Restores model weights, optimizer state, counters and RNG state into a trainer built from
// the checkpoint's configs; verifies checksums and shapes and refuses a checkpoint written
// for another model config (kMismatch). Returns the data position to resume from.
DataPosition load(train::Trainer& trainer, const std::string& path);

// Resolves a step directory or save folder to a checkpoint directory (kIo when none).
std::string resolve(const std::string& path);

}  // namespace olm::checkpoint
