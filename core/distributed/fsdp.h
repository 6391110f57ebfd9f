// Fully sharded data parallelism (ZeRO-3, FSDP's FULL_SHARD with one unit per transformer
// block and a root unit for everything else, as OLMo-core's apply_fsdp wraps them), on c10d's
// all_gather_into_tensor and reduce_scatter_tensor.
//
// Each unit's parameters are laid out in one flat buffer (padded to a multiple of world_size);
// rank r persistently holds only elements [r*S, (r+1)*S) of it (its shard, S = padded / world)
// and the optimizer state of those elements. The module's parameters are views into the flat
// buffer, whose storage is allocated only while the unit is gathered:
//   - before a block's forward its flat buffer is all-gathered, after the forward it is freed;
//   - a hook on the block's output gathers it again before the block's backward;
//   - when backward has accumulated the gradients of all the unit's parameters, they are copied
//     into a flat gradient buffer that is reduce-scattered (SUM, float32) into the rank's shard
//     gradient, and the unit's parameters are freed again.
// The root unit (embeddings, final norm, output projection) stays gathered for the whole step.
// Freeing resizes the flat storage to zero bytes (FSDP's storage resize), which leaves the
// parameters' version counters alone, so autograd's saved references to them stay valid.
//
// Mixed precision (FSDP's MixedPrecisionPolicy): the shards are the float32 master weights;
// with param_dtype bfloat16 the flat buffer (what the module computes with) is bfloat16, each
// gather casts the shard before all-gathering it, and the bfloat16 gradients are reduced in
// reduce_dtype (float32 by default) and accumulated into float32 shard gradients.
//
// HSDP (hybrid sharding): with a replicate group, the units are sharded over `group` (ranks of
// one replica, usually one node) and every shard gradient is then all-reduced over the
// replicate group (the ranks holding the same shard in the other replicas).
//
// The optimizer sees this rank's "pieces": for every parameter, the part of it that falls into
// the rank's shard, a 1-D view of the shard under the parameter's name (so parameter-group
// globs still apply). Gradients are summed, not averaged (the trainer normalizes by the global
// token count, as for DDP). Reduce-scatters are launched strictly in unit order (blocks last to
// first, root last), so every rank issues the same collectives in the same order.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/distributed/process_group.h"
#include "core/nn/module.h"

namespace olm::distributed {

struct FsdpUnitSpec {
  std::string name;                         // "blocks.3", "root"
  std::vector<nn::NamedParameter> params;  // every parameter of the unit, trainable or frozen
};

// Bytes of parameters and optimizer-visible tensors a rank holds (see measure in trainer).
struct FsdpMemory {
  int64_t shard_bytes = 0;          // persistent parameter shards, all units
  int64_t unsharded_bytes = 0;      // the same parameters unsharded (without padding)
  int64_t gathered_bytes = 0;       // full unit buffers allocated right now
  int64_t peak_gathered_bytes = 0;  // their maximum since the last reset_peak()
};

struct FsdpOptions {
  // The dtype the gathered parameters (and so the forward and backward) use; Undefined: the
  // parameters' own dtype.
  at::ScalarType param_dtype = at::ScalarType::Undefined;
  // The dtype gradients are reduce-scattered (and all-reduced across replicas) in.
  at::ScalarType reduce_dtype = at::kFloat;
  // HSDP: the group of the ranks holding the same shard in the other replicas (NULL: none).
  std::shared_ptr<ProcessGroup> replicate_group;
  // Blocks whose all-gather starts while an earlier one computes (the next ones in forward,
  // the previous ones in backward), overlapping communication with compute at the cost of
  // that many more gathered blocks (OLMo-core's prefetch_factor; 0: none).
  int64_t prefetch = 0;
};

class FullyShardedDataParallel {
 public:
  // `units`: blocks first (in forward order), the root unit last. The parameter values of
  // rank 0 of `group` in replica 0 are broadcast (a collective), then every rank keeps its
  // shard and frees the rest.
  FullyShardedDataParallel(std::shared_ptr<ProcessGroup> group, std::vector<FsdpUnitSpec> units,
                           FsdpOptions options = {});
  ~FullyShardedDataParallel();
  FullyShardedDataParallel(const FullyShardedDataParallel&) = delete;
  FullyShardedDataParallel& operator=(const FullyShardedDataParallel&) = delete;

  // This rank's pieces of the trainable and frozen parameters, names as the module's; pointers
  // stay valid for this object's lifetime. Pieces of frozen parameters do not require grad.
  std::vector<nn::NamedParameter> shard_parameters();
  // One flat shard gradient per unit with trainable parameters (after finish_backward).
  std::vector<at::Tensor> shard_grads();
  // Drops the shard gradients (after the optimizer step).
  void zero_grad();

  // Runs a block's forward (unit `index`, blocks only) between a gather and a free, and hooks
  // its output so that the block is gathered again before its backward.
  at::Tensor run_block(size_t index, const std::function<at::Tensor()>& forward);
  // The root unit, for a whole step (gathered at its start, freed at its end).
  void gather_root();
  void free_root();
  // After each backward (each micro-batch): launches what the hooks did not (parameters without
  // a gradient count as zeros), waits, and adds the reduced gradients to the shard gradients.
  void finish_backward();
  // Gathers every unit and leaves it gathered (for evaluation or reading the parameters);
  // free_all() reverts. Collectives.
  void gather_all();
  void free_all();
  // Makes the block unit `index` gathered again before autograd back-propagates into `t`, a
  // tensor the block's forward produced besides its output (the MoE routers' losses).
  void gather_before_backward(size_t index, const at::Tensor& t);
  // Runs `update` with every parameter full and in the shards' (master) precision, then keeps
  // this rank's part of the result as its shards (nGPT's normalize_matrices after a step).
  // A collective.
  void update_full_precision(const std::function<void()>& update);
  // Ends sharding: every parameter becomes a full tensor of its own in the shards' precision
  // (a collective). Only destruction may follow.
  void release_full_precision();

  // ---- Checkpoints: which elements a rank holds, and restoring them.

  // A parameter's piece in one rank's shard: elements [offset, offset + numel) of the
  // parameter's flattened elements, whose global shape is `shape`.
  struct Piece {
    std::string name;
    int64_t offset = 0;
    int64_t numel = 0;
    std::vector<int64_t> shape;
    bool trainable = false;
  };
  // The pieces rank `rank` of group() holds, in shard_parameters()'s order when `rank` is this
  // rank (under HSDP each replica holds the same pieces by shard rank). The
  // unit layout is the same on every rank, so any rank can tell what any other holds (rank 0
  // writes every shard's record into a checkpoint's metadata). No collective.
  std::vector<Piece> pieces_of_rank(int64_t rank) const;
  // Overwrites this rank's pieces: `pieces` maps every piece's parameter name to that piece's
  // values (piece.numel elements, any shape). Units gathered now are freed, as their full
  // buffers would be stale; the next gather all-gathers the new values. Throws kMismatch naming
  // a missing or wrongly sized piece before anything is written. No collective.
  void load_shard(const std::map<std::string, at::Tensor>& pieces);

  ProcessGroup& group() { return *group_; }
  ProcessGroup* replicate_group() { return options_.replicate_group.get(); }
  size_t num_units() const;
  FsdpMemory memory() const;
  void reset_peak();
  double last_wait_seconds() const;

  struct State;

 private:
  std::shared_ptr<ProcessGroup> group_;
  FsdpOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace olm::distributed
