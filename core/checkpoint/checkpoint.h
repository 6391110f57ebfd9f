// Checkpoint directories: <save_folder>/step<N>/ holding model.safetensors (OLMo-core names,
// loadable by OLMo-core unchanged), optim.safetensors and meta.olmk (FlatBuffers
// CheckpointMeta, identifier "OLMK": configs, counters, data position, RNG state and a tensor
// index with shapes, dtypes and CRC-32s). A checkpoint is written into a temporary directory,
// fsynced and renamed into place, so a crash at any moment leaves earlier ones intact.
//
// Sharded checkpoints: when the trainer has a process group, save() is a collective. Every
// rank r writes rank<r>.safetensors holding a contiguous slice of each tensor's flattened
// elements (rank r of W: elements [r*ceil(n/W), min(n, (r+1)*ceil(n/W)))), for parameters and
// optimizer state alike, into one temporary directory; after every rank finished (agreed by
// an all-reduce, so a failure on any rank fails all and removes the directory), rank 0 writes
// meta.olmk (global shapes and dtypes; each shard's file, offset, length and CRC-32, the
// last computed by the rank that wrote it; world size, counters, data position) and renames
// the directory into place.
//
// Under FSDP a rank holds only its pieces of the parameters (and their optimizer state), so
// it writes exactly those, each recorded with its offset in the whole parameter's flattened
// elements and the parameter's global shape: the checkpoint means the same as a DDP one. A
// piece's scalar state (AdamW's step, identical on every rank holding the parameter) is
// written once, by the rank holding the parameter's first element; the others' copies are
// checksummed and a difference fails the save. Buffers are replicated: contiguous slices.
//
// A shard may also hold part of a slice of its tensor (tensor parallelism: TensorShard's
// slice_dim >= 0): offset and numel then index the row-major elements of
// whole.narrow(slice_dim, slice_start, slice_length), so along a dimension d > 0 its elements
// lie in one run of the whole tensor per index of the dimensions before d. Readers map such
// shards to whole-tensor elements; metadata without the fields (older checkpoints) reads as
// before, with every shard indexing the whole tensor.
//
// Under tensor parallelism a split parameter's tensor (and its optimizer state) is the TP
// rank's slice of the whole one: each TP rank's ranks write their parts of its slices (under
// FSDP its pieces within them), recorded with the slice as above. Replicated parameters,
// buffers and scalar state are the same on every TP rank and written by TP rank 0's ranks
// only (the others' scalar copies compared). Records keep the whole tensor's OLMo-core name,
// shape and dtype, so the checkpoint means the same as a DDP one and loads into any layout.
//
// load() reads any kind (single process, DDP or FSDP, any world size) into any trainer, with
// or without a process group, and reads only what the trainer needs: whole tensors, or under
// FSDP this rank's pieces, under TP its slices (under both, its pieces of them: whole-tensor
// ranges, one per row of a slice along dimension 1), so only the shard entries overlapping
// them are opened, read and checksummed. Every record's shards are checked to cover each of its elements exactly once
// either way (slices checked against its shape first, refused kParse naming file and tensor).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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
  int32_t world_size = 0;  // 0: a single-process checkpoint; else the ranks that wrote shards
};

inline constexpr char kMetaIdentifier[] = "OLMK";
inline constexpr char kModelFile[] = "model.safetensors";
inline constexpr char kOptimFile[] = "optim.safetensors";
inline constexpr char kMetaFile[] = "meta.olmk";

// The shard file rank `rank` writes: rank<r>.safetensors.
std::string shard_file(int64_t rank);
// The slice [begin, end) of n flattened elements that rank `rank` of `world` holds.
std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world);

// Saves the trainer's state as <folder>/step<step>, then keeps the newest keep_last_n
// checkpoints. Returns the checkpoint's directory. Throws kIo naming the path on failure.
// With a process group on the trainer: a collective writing a sharded checkpoint (above);
// every rank returns the same directory or throws.
std::string save(train::Trainer& trainer, const std::string& folder, const DataPosition& data,
                 int64_t keep_last_n);

// The newest complete checkpoint under folder, or "" when there is none.
std::string latest(const std::string& folder);

// Reads and verifies a checkpoint's metadata. `path` is a step directory or a save folder
// (then its latest checkpoint). The metadata's own checksum is checked before it is parsed,
// then every field: counters, data position, both configs (validated as a config file is),
// the RNG state (by LibTorch's rules) and the tensor index. A refusal (kParse/kIo) names
// <dir>/meta.olmk and the field, holds only valid UTF-8 and, when an older checkpoint in the
// same save folder has metadata that reads, says it would load.
Meta read_meta(const std::string& path);

// Restores model weights, optimizer state, counters and RNG state into a trainer built from
// the checkpoint's configs; verifies checksums and shapes and refuses a checkpoint written
// for another model config (kMismatch). Returns the data position to resume from.
// All of it is read into new tensors and checked (metadata as read_meta does, each tensor
// against its parameter or optimizer slot) before the first byte of the trainer changes, so
// a refused load leaves the trainer and model as they were. Refusals read as read_meta's.
// A sharded checkpoint loads at any world size: missing shard files, shards that do not cover
// a tensor's elements exactly once, slices outside its shape, or shapes, dtypes and checksums
// that differ from the metadata throw (kIo/kParse naming the file and tensor) before the
// trainer is touched. Under FSDP or TP (the group set first) it is a collective: the ranks
// agree after reading, so a failure on one rank fails every rank with nothing loaded.
DataPosition load(train::Trainer& trainer, const std::string& path);

// meta.olmk's bytes: the CheckpointMeta FlatBuffer followed by a 12-byte trailer holding the
// buffer's length and CRC-32 (little-endian uint32s) and "OKC1". Readers check the trailer
// before parsing. A file without it was written before metadata checksums and still loads
// (older readers, which stop at the buffer's end, read the new files too). Exposed for tests
// that build damaged checkpoints.
std::vector<uint8_t> encode_meta(const fb::CheckpointMetaT& meta);

// Resolves a step directory or save folder to a checkpoint directory (kIo when none).
std::string resolve(const std::string& path);

}  // namespace olm::checkpoint
