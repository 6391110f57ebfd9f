// olmo_core.nn.feed_forward.FeedForward ("default", gated): w2(act(w1 x) * w3 x) — SwiGLU,
// GeGLU, ReGLU, LiGLU or GLU by the activation; OLM's ClassicFFN ("classic"): w2(act(w1 x)).
#pragma once
#include "core/config/config.h"
#include "core/nn/module.h"
#include "core/nn/parallel.h"

namespace olm::nn {

class FeedForward : public Module {
 public:
  FeedForward(int64_t d_model, const FeedForwardSpec& spec, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;

  Linear& w1() { return *w1_; }
  Linear& w2() { return *w2_; }
  Linear* w3() { return w3_.get(); }  // NULL for "classic"

  // nGPT: unit rows for w1 and w3, unit columns for w2.
  void normalize_matrices();

  // Tensor parallelism: w1 and w3 (with their biases) column-parallel, w2 row-parallel (its
  // bias replicated), named below this module. Throws kInvalidConfig naming
  // "feed_forward.hidden_size" or "feed_forward.name" when they do not split over `degree`.
  std::vector<TensorParallelSplit> tensor_parallel_splits(int64_t degree) const;
  // Once the split parameters hold this rank's slices: forward then takes this rank's sequence
  // shard, gathers the whole sequence and returns its shard of w2's output summed over the group.
  void set_tensor_parallel(std::shared_ptr<TensorParallel> tp) { tp_ = std::move(tp); }

 private:
  std::shared_ptr<TensorParallel> tp_;
  FeedForwardSpec spec_;
  std::shared_ptr<Linear> w1_, w2_, w3_;
  at::Tensor* sw1_ = nullptr;  // "normalized": learned scales of the gate and the value
  at::Tensor* sw3_ = nullptr;
  double sqrt_d_model_ = 0;
};

}  // namespace olm::nn
