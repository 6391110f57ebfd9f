// Tensor parallelism's collectives (nn::TensorParallel) over the TP sub-group of the device
// mesh: c10d's all-gather, reduce-scatter and all-reduce through ProcessGroup, wrapped as
// autograd functions where the model differentiates through them.
#pragma once
#include "core/distributed/process_group.h"
#include "core/nn/parallel.h"

namespace olm::distributed {

class TensorParallelGroup : public nn::TensorParallel {
 public:
  // group: the ranks that split the model between them (the mesh's "tp" sub-group), each
  // holding the same batch. Throws kInvalidArgument for a NULL group.
  explicit TensorParallelGroup(std::shared_ptr<ProcessGroup> group);

  int64_t rank() const override { return group_->rank(); }
  int64_t size() const override { return group_->world_size(); }
  const std::shared_ptr<ProcessGroup>& group() const { return group_; }

  at::Tensor gather_sequence(const at::Tensor& shard) override;
  at::Tensor reduce_scatter_sequence(const at::Tensor& partial) override;
  at::Tensor all_reduce_sum(const at::Tensor& partial) override;
  at::Tensor gather_last_dim(const at::Tensor& shard) override;
  void all_reduce_sum_(at::Tensor& t) override;
  void all_reduce_max_(at::Tensor& t) override;

 private:
  std::shared_ptr<ProcessGroup> group_;
};

}  // namespace olm::distributed
