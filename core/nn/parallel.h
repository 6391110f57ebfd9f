// What the modules need from tensor and context parallelism, as interfaces: the collectives
// themselves live in core/distributed (above nn in the layer order), which implements these
// and hands them to the model (Transformer::apply_context_parallel, apply_tensor_parallel).
#pragma once
#include <ATen/ATen.h>

#include <optional>

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

}  // namespace olm::nn
