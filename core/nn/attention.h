// olmo_core.nn.attention.Attention: MHA/GQA/MQA with optional QK-norm (over the whole
// projection or per head), clip_qkv and RoPE, over ATen's SDPA (causal).
#pragma once
#include "core/nn/layer_norm.h"
#include "core/nn/rope.h"

namespace olm::nn {

class Attention : public Module {
 public:
  Attention(int64_t d_model, const AttentionSpec& spec, std::shared_ptr<BufferCache> cache,
            const at::TensorOptions& options);

  // x: (B, T, d_model) -> (B, T, d_model)
  at::Tensor forward(const at::Tensor& x) const;

  Linear& w_q() { return *w_q_; }
  Linear& w_k() { return *w_k_; }
  Linear& w_v() { return *w_v_; }
  Linear& w_out() { return *w_out_; }

 private:
  AttentionSpec spec_;
  std::shared_ptr<Linear> w_q_, w_k_, w_v_, w_out_;
  std::shared_ptr<LayerNorm> q_norm_, k_norm_;
  std::optional<RotaryEmbedding> rope_;
};

}  // namespace olm::nn
