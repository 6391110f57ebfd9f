// What one layer keeps between decoding steps (core/generate): the per-layer cache that
// Transformer::make_kv_caches builds and every block's sequence mixer reads and extends.
#pragma once
#include <ATen/ATen.h>

namespace olm::nn {

// One layer's cache for B sequences that have seen `length` positions so far.
// An attention layer keeps the keys and values of those positions, (B, max_len, n_kv_heads,
// head_dim), filled up to `length`. A GatedDeltaNet layer's memory does not grow with the
// sequence: it keeps the recurrent state and each short convolution's last conv_size - 1
// inputs, which is all the next token's output depends on.
struct KVCache {
  at::Tensor k, v;
  int64_t length = 0;
  // GatedDeltaNet: S (B, n_v_heads, head_dim, head_v_dim) in float32 (float64 for float64
  // models), as fla's final_state; zeros before the first token.
  at::Tensor state;
  // GatedDeltaNet: the inputs of q_conv1d, k_conv1d and v_conv1d at the last conv_size - 1
  // positions, (B, conv_size - 1, channels); zeros before the first token (the convolution's
  // left padding).
  at::Tensor q_conv, k_conv, v_conv;
};

}  // namespace olm::nn
