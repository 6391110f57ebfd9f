// Data parallelism (torch.nn.parallel.DistributedDataParallel's reducer, on c10d): parameters
// start equal (broadcast from rank 0); during the backward of the last micro-batch each
// parameter's gradient accumulator fires a hook, gradients are copied into flat buckets and
// each full bucket is all-reduced asynchronously while backward goes on. Buckets are launched
// strictly in bucket order, so every rank issues the same collectives in the same order (a
// parameter that backward does not reach therefore holds back the buckets after it until
// finish(), which reduces it as zeros).
//
// Gradients are SUMMED, not averaged: the trainer divides each rank's summed loss by the
// global batch's target-token count (OLMo-core's normalization), so the sum over ranks is the
// single-process gradient.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "core/distributed/process_group.h"

namespace olm::distributed {

class DataParallel {
 public:
  // `params` in registration order; buckets hold up to bucket_bytes each (the reverse order,
  // which is roughly the order backward produces gradients in).
  DataParallel(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
               int64_t bucket_bytes = 25 * 1024 * 1024);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Rank 0's parameter values to every rank (a collective).
  void broadcast_parameters();
  // Whether the coming backward is the last of the step (its hooks start the reduction); off
  // for earlier micro-batches, whose gradients only accumulate locally (DDP's no_sync).
  void set_sync(bool sync);
  // After the last backward: launches what did not launch (parameters without gradients count
  // as zeros), waits, and writes the summed gradients back. Every parameter has a gradient
  // afterwards.
  void finish();

  ProcessGroup& group() { return *group_; }
  std::shared_ptr<ProcessGroup> group_ptr() { return group_; }
  size_t num_buckets() const;
  // Buckets the last backward's hooks launched before finish() (the rest had to wait for it):
  // all of them when every parameter received a gradient.
  size_t last_buckets_launched_in_backward() const;
  // Time spent in finish() waiting for the reduction (what backward did not hide), last step.
  double last_wait_seconds() const;

  struct State;

 private:
  std::shared_ptr<ProcessGroup> group_;
  std::shared_ptr<State> state_;  // shared with the autograd hooks, which outlive nothing
};

}  // namespace olm::distributed
