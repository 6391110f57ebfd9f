// What the checkpoint's files share, and no caller outside core/checkpoint needs. The code:
//   folder.cpp      save folders: step<N> directories, publishing, stale leftovers, pruning
//   meta.cpp        meta.olmk: encoding with its checksum trailer, reading and checking every field
//   sharded.cpp     sharded (process-group) save and the reading of shard files
//   checkpoint.cpp  single-process save, the reading of whole files, and load() for both
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "core/distributed/process_group.h"
#include "core/error.h"
#include "core/io/utf8.h"

namespace olm::checkpoint::detail {

// ---- folder.cpp ----
[[noreturn]] void fail_errno(const std::string& what, const std::string& path);
bool is_dir(const std::string& path);
bool is_file(const std::string& path);
void fsync_dir(const std::string& path);
void remove_tree(const std::string& path);
// step<N> directories holding a meta.olmk, by step.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& folder);
std::string random_suffix();
// "stepN" -> N; -1 for any other name.
int64_t step_of_name(const std::string& name);
// The directory part and the last name of a checkpoint directory path (trailing '/' ignored).
std::pair<std::string, std::string> split_dir(std::string dir);
// Removes the leftovers of a writer killed mid-save (see save()).
void clean_stale(const std::string& folder);
// Renames tmp_dir to final_dir (moving an existing final_dir aside first), fsyncing the folder.
void publish(const std::string& folder, const std::string& tmp_dir, const std::string& final_dir, int64_t step);
// Removes all but the newest keep_last_n checkpoints.
void prune(const std::string& folder, int64_t keep_last_n);

// ---- meta.cpp ----
// The element count of a shape; checked_numel is nullopt for a negative dimension or a count
// past int64, numel_of throws kParse for them.
std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape);
int64_t numel_of(const std::vector<int64_t>& shape);
at::ScalarType dtype_named(const std::string& name, const std::string& what);
uint32_t tensor_crc(const at::Tensor& t);

// The parts of a checkpoint's metadata that only make sense together, checked field by field
// against each other and the rest of the checkpoint before anything is applied.
struct CheckedMeta {
  std::unique_ptr<fb::CheckpointMetaT> native;
  Config model_config;
  train::TrainConfig train_config;
};
// Reads meta.olmk: the checksum trailer first (before the buffer is parsed), then the
// FlatBuffers verifier, the schema version and every field.
CheckedMeta read_meta_native(const std::string& dir);
// "; the previous checkpoint '<folder>/stepM' would load", or "" (meta.cpp).
std::string older_checkpoint_hint(const std::string& dir);
// The metadata every save writes: counters, configs, data position, RNG state, loss history.
fb::CheckpointMetaT base_meta(train::Trainer& trainer, const DataPosition& data);
void write_meta(const std::string& dir, const fb::CheckpointMetaT& meta);

// Runs f, the reading of checkpoint `dir`; its refusals come back with valid UTF-8 only (names
// read from a damaged file may be anything), and a damaged or unreadable checkpoint's with the
// older checkpoint that would load.
template <class F>
auto explained(const std::string& dir, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    std::string message = io::valid_utf8(e.what());
    if (e.code() == ErrorCode::kParse || e.code() == ErrorCode::kIo) message += older_checkpoint_hint(dir);
    throw Error(e.code(), message);
  }
}

// ---- reading tensors (sharded.cpp, checkpoint.cpp) ----
// Element ranges [begin, end) of a tensor's flattened elements.
using Ranges = std::vector<std::pair<int64_t, int64_t>>;

// A tensor-parallel slice of a whole tensor: whole.narrow(dim, start, length); dim -1 is the
// whole tensor (TensorShard's slice_* fields).
struct Slice {
  int64_t dim = -1;
  int64_t start = 0;
  int64_t length = 0;
};

// The whole tensor's element ranges, in order, holding elements [offset, offset + numel) of
// the slice's row-major flattening: one range for the whole tensor or a slice along dimension
// 0, else up to one per index of the dimensions before the slice's (adjacent ones merged).
// The caller has checked the slice against shape and the range against the slice.
Ranges whole_ranges(const std::vector<int64_t>& shape, const Slice& slice, int64_t offset, int64_t numel);

// Tensor parallelism as checkpoints see it, all of it taken from the trainer in one place.
// A split parameter's tensor (and its optimizer state) is this TP rank's slice of the whole
// one; replicated parameters, buffers and scalar state are the same on every TP rank.
struct TensorParallelLayout {
  struct Split {
    Slice slice;
    std::vector<int64_t> whole_shape;
  };
  bool active = false;    // the trainer's model is split over a TP group
  bool rank_zero = true;  // TP rank 0
  // This rank among the ranks sharing its TP coordinate (data x context parallelism).
  int64_t batch_rank = 0, batch_size = 1;
  std::map<std::string, Split> split;  // by parameter name; only the split ones
  // The split parameter `param` that tensor `t` is a slice of (the parameter or a non-scalar
  // state of it); nullptr for a whole tensor.
  const Split* slice_of(const std::string& param, const at::Tensor& t) const {
    auto it = split.find(param);
    return it == split.end() || t.dim() == 0 ? nullptr : &it->second;
  }
};
TensorParallelLayout tensor_parallel_layout(train::Trainer& trainer);

// What a loading rank needs of a recorded tensor (group, name, global shape): no ranges for
// a tensor it does not need.
using Need =
    std::function<Ranges(const std::string& group, const std::string& name, const std::vector<int64_t>& shape)>;

// A recorded tensor's needed elements: one 1-D part per needed range, in the same order.
struct Loaded {
  std::vector<int64_t> shape;
  Ranges ranges;
  std::vector<at::Tensor> parts;
  // The needed elements in the ranges' order, as one 1-D tensor.
  at::Tensor joined() const { return parts.size() == 1 ? parts[0] : at::cat(parts); }
  // The whole tensor in its recorded shape (when the only range needed was all of it).
  at::Tensor whole() const { return joined().reshape(shape); }
};
using LoadedTensors = std::map<std::string, std::map<std::string, Loaded>>;

// True on every rank when `ok` holds on every rank (an all-reduce of the failures).
bool all_ok(distributed::ProcessGroup& group, bool ok);
// A process group's save (save() with a process group on the trainer).
std::string save_sharded(train::Trainer& trainer, distributed::ProcessGroup& group, const std::string& folder,
                         const DataPosition& data, int64_t keep_last_n);
// The needed ranges of a sharded checkpoint's tensors, from the shards that overlap them.
LoadedTensors read_sharded(const std::string& dir, const fb::CheckpointMetaT& meta, const Need& need);

}  // namespace olm::checkpoint::detail
