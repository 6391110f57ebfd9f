// What the modules need from tensor and context parallelism, as interfaces: the collectives
// themselves live in core/distributed (above nn in the layer order), which implements these
// and hands them to the model (Transformer::apply_context_parallel, apply_tensor_parallel).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace olm::nn {

// Context parallelism (OLMo-core's apply_cp): every rank of the CP group holds some of each
// sequence's tokens (which ones: the load balancer's layout, zig-zag for the ring, contiguous
// for Ulysses) and runs every token-local layer on them alone; only attention needs the rest.
class ContextParallel {
 public:
  virtual ~ContextParallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // Causal attention of this rank's queries over the keys and values of the whole sequence.
  // q, k, v: (B, H, T_local, D), this rank's tokens in its layout's order, RoPE applied at
  // their global positions, GQA's key/value heads already repeated. doc_positions (B, T_local)
  // int64: each token's position inside its document (its global position in the row when
  // there are no documents); with the layout it tells every token's document. window: keys
  // at most window - 1 positions back (OLMo-core's window_size (w - 1, 0)); scale: the softmax
  // scale (nullopt: 1/sqrt(D)). Returns (B, H, T_local, D), differentiable in q, k and v.
  virtual at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& doc_positions, std::optional<int64_t> window,
                               std::optional<double> scale) = 0;
};

// Tensor parallelism (OLMo-core's apply_tp, Megatron style, always with sequence and loss
// parallelism): every rank of the TP group holds a slice of each split matrix (heads, the
// feed-forward's hidden units, the vocabulary) and reads the same batch. Between the blocks
// each rank holds a contiguous 1/size of the sequence, (B, T/size, D); attention and the
// feed-forward gather the whole sequence in and reduce-scatter their partial sums out.
class TensorParallel {
 public:
  virtual ~TensorParallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;

  // Differentiable collectives (autograd functions).
  // This rank's sequence shard (B, T/size, ...) -> the whole sequence (B, T, ...), the ranks'
  // shards in rank order along dim 1. Backward: the gradient summed over the ranks (their
  // partial gradients), this rank's shard of it (reduce-scatter).
  virtual at::Tensor gather_sequence(const at::Tensor& shard) = 0;
  // Partial sums (B, T, ...) -> this rank's shard (B, T/size, ...) of their sum over the
  // ranks. Backward: the shards' gradients gathered (all-gather).
  virtual at::Tensor reduce_scatter_sequence(const at::Tensor& partial) = 0;
  // Partial sums -> their sum over the ranks, for a statistic every rank then uses for its own
  // part of the output (a norm over a split projection). Backward: the ranks' gradients summed.
  virtual at::Tensor all_reduce_sum(const at::Tensor& partial) = 0;
  // Slices along the last dimension (the vocabulary) -> the whole, concatenated in rank order,
  // for values every rank then uses alike. Backward: this rank's slice of the gradient.
  virtual at::Tensor gather_last_dim(const at::Tensor& shard) = 0;

  // Not differentiable, in place, every rank the same result.
  virtual void all_reduce_sum_(at::Tensor& t) = 0;
  virtual void all_reduce_max_(at::Tensor& t) = 0;
};

// How one parameter is laid out under TP.
struct TensorParallelSlice {
  std::string name;              // the parameter's OLMo-core name
  int64_t dim = -1;              // the split dimension; -1: replicated (every rank holds all of it)
  std::vector<int64_t> full_shape;
  int64_t start = 0, length = 0; // the rank's range along dim (dim >= 0)
};

// A parameter split over the TP group: its name below the module that owns it ("w_q.weight")
// and the dimension along which each rank holds a contiguous 1/size.
struct TensorParallelSplit {
  std::string name;
  int64_t dim = 0;
};

}  // namespace olm::nn
