// olmo_core.nn.moe: the mixture-of-experts feed-forward of MoE blocks ("feed_forward_moe").
//
//   router     MoELinearRouter: float32 logits x W^T (W stored flat, (num_experts * d_model)),
//              softmax or sigmoid scores, top-k (optionally through the aux-loss-free
//              "score_bias"), optional p-norm weight normalization, training-time jitter.
//   experts    ParallelMLP / ParallelDroplessMLP around MoEMLP / DroplessMoEMLP: tokens are
//              sorted (stably) by expert, packed into an (experts, capacity, d_model) buffer,
//              run through three batched matmuls (SwiGLU) and scattered back weighted by
//              their routing weights. "default" drops the tokens past its capacity, which
//              OLMo-core sizes from the tokens of each call (so one-token decoding steps get
//              capacity 0; use "dropless" to generate); "dropless" uses the largest expert
//              load as the capacity, so none is dropped (the buffer then holds
//              num_experts * max load rows, at most num_experts / top_k times the routed ones).
//   shared_mlp an optional dense FeedForward every token goes through; combined with the
//              experts as shared / (k + 1) + experts * k / (k + 1).
//
// The router's load-balancing loss and z-loss (olmo_core.nn.moe.loss) are collected into
// MoEAuxLosses, already multiplied by their (per-layer) weights, for the trainer to add to the
// loss it differentiates, as OLMo-core's attach_auxiliary_loss does.
#pragma once
#include <functional>
#include "core/nn/feed_forward.h"

namespace olm::nn {

// The routers' auxiliary losses over one forward pass, summed over the MoE blocks.
struct MoEAuxLosses {
  // OLMo-core's loss_div_factor for the router losses; undefined: the micro-batch's B * S
  // tokens (and, for the "instance" load-balancing granularity, its routed tokens / top_k).
  at::Tensor loss_div;
  at::Tensor lb_loss;        // weighted load-balancing loss; undefined when no block has one
  at::Tensor router_z_loss;  // weighted router z-loss; undefined when no block has one

  // Adds another record's losses to these (a block's record into the model's).
  void add(const MoEAuxLosses& other);
};

class MoERouter : public Module {
 public:
  MoERouter(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options);

  struct Routing {
    at::Tensor weights;                // (B, S, top_k) float32
    at::Tensor indices;                // (B, S, top_k) int64
    at::Tensor batch_size_per_expert;  // (num_experts,) int64
  };
  // x: (B, S, d_model). Adds the weighted aux losses to *aux when aux is given.
  Routing forward(const at::Tensor& x, MoEAuxLosses* aux) const;

  // OLMo-core's MoERouter.post_batch: with bias_gamma, moves score_bias by
  // bias_gamma * sign(mean load - load) over the loads routed in training since the last call.
  // sum_across_ranks (may be empty): sums a tensor over the data-parallel ranks in place.
  void post_batch(const std::function<void(at::Tensor&)>& sum_across_ranks = {});

  at::Tensor& weight() { return weight_; }
  at::Tensor* score_bias() { return score_bias_; }

 private:
  int64_t d_model_;
  MoESpec spec_;
  at::Tensor& weight_;
  at::Tensor* score_bias_ = nullptr;
  mutable at::Tensor pending_load_;  // float32 (num_experts,), bias_gamma only
};

// MoEMLP ("default": w1, w3 (num_experts * d_model, hidden), w2 (num_experts * hidden, d_model))
// or DroplessMoEMLP (all three (num_experts * hidden, d_model)): OLMo-core's shapes, so the
// state dict and the init draw order match.
class MoEMLP : public Module {
 public:
  MoEMLP(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options);
  // x: (num_experts, capacity, d_model) -> the same shape.
  at::Tensor forward(const at::Tensor& x) const;

  at::Tensor& w1() { return w1_; }
  at::Tensor& w2() { return w2_; }
  at::Tensor& w3() { return w3_; }

 private:
  int64_t d_model_, hidden_, experts_;
  bool dropless_;
  at::Tensor &w1_, &w2_, &w3_;
};

// ParallelMLP / ParallelDroplessMLP without expert parallelism: "experts.mlp.*".
class MoEExperts : public Module {
 public:
  MoEExperts(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options);
  // x: (B, S, d_model) -> (B, S, d_model).
  at::Tensor forward(const at::Tensor& x, const MoERouter::Routing& routing) const;
  // ParallelMLP.expert_capacity for `tokens` routed tokens (before top_k).
  int64_t capacity(int64_t tokens) const;
  MoEMLP& mlp() { return *mlp_; }

 private:
  MoESpec spec_;
  std::shared_ptr<MoEMLP> mlp_;
};

class MoE : public Module {
 public:
  MoE(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, MoEAuxLosses* aux) const;

  MoERouter& router() { return *router_; }
  MoEExperts& experts() { return *experts_; }
  FeedForward* shared_mlp() { return shared_mlp_.get(); }

 private:
  MoESpec spec_;
  std::shared_ptr<MoERouter> router_;
  std::shared_ptr<MoEExperts> experts_;
  std::shared_ptr<FeedForward> shared_mlp_;
};

}  // namespace olm::nn
