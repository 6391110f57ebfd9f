// OLMo-core's "fused_linear" loss implementation: the output projection and the cross-entropy
// computed chunk by chunk, so the full (tokens, vocab) float32 logits never exist at once,
// in the forward or the backward pass.
#pragma once
#include <ATen/ATen.h>

#include <utility>

namespace olm::nn {

// x: (N, d) final hidden states (after the LM head's norm); weight: (V, d); bias: (V) or
// undefined; labels: (N); logit_scale: (V) or undefined, multiplies each vocabulary entry's
// logit after the projection (the normalized head's effective sz), in the weight's dtype as
// the default head does. Returns per-row (ce, logsumexp), both float32 (N): ce is 0 where
// the label is ignore_index. Differentiable in x, weight, bias and logit_scale; the backward
// recomputes each chunk's logits instead of keeping them.
std::pair<at::Tensor, at::Tensor> fused_linear_cross_entropy(const at::Tensor& x, const at::Tensor& weight,
                                                             const at::Tensor& bias, const at::Tensor& labels,
                                                             int64_t ignore_index,
                                                             const at::Tensor& logit_scale = at::Tensor());

// Rows per chunk: the chunk's float32 logits stay near 32 MiB whatever the vocabulary.
int64_t fused_linear_chunk_rows(int64_t vocab_size);

}  // namespace olm::nn
