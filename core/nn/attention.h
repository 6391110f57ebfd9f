// olmo_core.nn.attention.Attention: MHA/GQA/MQA with optional QK-norm (over the whole
// projection or per head), clip_qkv and RoPE, over ATen's SDPA (causal).
#pragma once
#include "core/nn/layer_norm.h"
#include "core/nn/rope.h"

namespace olm::nn {

// Keys and values of the positions decoded so far, for one layer: (B, max_len, n_kv_heads,
// head_dim), filled up to `length`.
struct KVCache {
  at::Tensor k, v;
  int64_t length = 0;
};

class Attention : public Module {
 public:
  Attention(int64_t d_model, const AttentionSpec& spec, std::shared_ptr<BufferCache> cache,
            const at::TensorOptions& options);

  // x: (B, T, d_model) -> (B, T, d_model). With a cache, x holds the T positions after the
  // cache's `length` ones; their keys and values are appended to the cache.
  at::Tensor forward(const at::Tensor& x, KVCache* cache = nullptr) const;

  int64_t n_kv_heads() const { return spec_.n_kv_heads; }
  int64_t head_dim() const { return spec_.head_dim; }

  Linear& w_q() { return *w_q_; }
  Linear& w_k() { return *w_k_; }
  Linear& w_v() { return *w_v_; }
  Linear& w_out() { return *w_out_; }
  Linear* w_g() { return w_g_.get(); }

  // nGPT: unit rows for w_q, w_k, w_v, unit columns for w_out.
  void normalize_matrices();

 private:
  AttentionSpec spec_;
  std::shared_ptr<Linear> w_q_, w_k_, w_v_, w_out_, w_g_;
  std::shared_ptr<LayerNorm> q_norm_, k_norm_;
  at::Tensor* sq_ = nullptr;  // normalized (nGPT) attention's learned query and key scales
  at::Tensor* sk_ = nullptr;
  double d_model_ = 0;
  std::optional<RotaryEmbedding> rope_;
};

}  // namespace olm::nn
