// Context parallelism (OLMo-core's apply_cp) over one process group, the mesh's "cp"
// dimension: the load balancer that deals each sequence's tokens out to the ranks, and the
// attention that lets every rank's queries see the keys of the whole sequence, either round a
// ring of point-to-point exchanges (ring attention, zig-zag layout) or by two all-to-alls that
// trade sequence shards for head shards (Ulysses, contiguous layout).
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "core/distributed/process_group.h"
#include "core/nn/parallel.h"

namespace olm::distributed {

enum class ContextParallelStyle { kRingZigZag, kUlysses };

class ContextParallelGroup : public nn::ContextParallel {
 public:
  // `group`: the ranks that share one sequence (its rank order is the layout's). Throws
  // kInvalidArgument when group is NULL.
  ContextParallelGroup(std::shared_ptr<ProcessGroup> group, ContextParallelStyle style);

  int64_t rank() const override { return group_->rank(); }
  int64_t size() const override { return group_->world_size(); }
  ContextParallelStyle style() const { return style_; }
  const std::shared_ptr<ProcessGroup>& group() const { return group_; }

  // The load balancer: this rank's part of dimension `dim` (length T; negative counts from the
  // end) of t, in the order attention() expects: zig-zag (of 2W equal chunks, rank r holds
  // chunks r and 2W-1-r, so every rank does the same causal work; T % 2W == 0) or contiguous
  // for Ulysses (chunk r of W; T % W == 0). Differentiable. Throws kInvalidArgument naming
  // `argument` for an undefined tensor, a dimension it lacks or a length that does not split.
  at::Tensor shard(const at::Tensor& t, int64_t dim, const std::string& argument) const;
  // The global indices (int64, on the CPU) of this rank's tokens of a sequence of length
  // seq_len, in shard()'s order. Throws kInvalidArgument naming seq_len as shard() does.
  at::Tensor global_indices(int64_t seq_len) const;

  // nn::ContextParallel: this rank's queries over the whole sequence's keys and values.
  // Collective over the group: every rank calls it with the same B, H, T_local, D, window and
  // scale. Throws kInvalidArgument naming the argument whose shape or dtype is wrong, and
  // kInvalidConfig naming n_heads when Ulysses cannot split the heads over the ranks.
  // The group must outlive the backward of the graph attention() builds.
  at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& doc_positions, std::optional<int64_t> window,
                       std::optional<double> scale) override;

 private:
  int64_t split_count() const;  // 2W chunks for the zig-zag, W for Ulysses
  std::shared_ptr<ProcessGroup> group_;
  ContextParallelStyle style_;
};

}  // namespace olm::distributed
