// Parameter and FLOP accounting, mirroring OLMo-core's num_params (config side) and
// num_flops_per_token (module side) formulas term by term.
#include "core/config/config.h"
#include "core/error.h"

namespace olm {

int64_t LayerNormSpec::num_params(int64_t size) const {
  if (!elementwise_affine) return 0;
  return bias ? 2 * size : size;
}

int64_t AttentionSpec::num_params(int64_t d_model) const {
  int64_t params = d_model * n_heads * head_dim;  // w_q
  if (bias) params += n_heads * head_dim;
  params += 2 * d_model * n_kv_heads * head_dim;  // w_k, w_v
  if (bias) params += 2 * n_kv_heads * head_dim;
  if (qk_norm) {
    if (use_head_qk_norm) {
      params += 2 * qk_norm->num_params(head_dim);
    } else {
      params += qk_norm->num_params(n_heads * head_dim);
      params += qk_norm->num_params(n_kv_heads * head_dim);
    }
  }
  params += n_heads * head_dim * d_model;  // w_out
  if (bias) params += d_model;
  if (normalized) params += (n_heads + n_kv_heads) * head_dim;  // sq, sk
  if (gate) {
    const int64_t outputs = gate->elementwise ? n_heads * head_dim : n_heads;  // w_g
    params += d_model * outputs;
    if (bias) params += outputs;
  }
  return params;
}

int64_t FeedForwardSpec::num_params(int64_t d_model) const {
  const bool gated = name != "classic";
  int64_t params = (gated ? 3 : 2) * d_model * hidden_size;
  if (bias) params += (gated ? 2 : 1) * hidden_size + d_model;
  if (name == "normalized") params += 2 * hidden_size;  // sw1, sw3
  return params;
}

int64_t BlockSpec::num_params(int64_t d_model) const {
  if (name == "normalized")  // no norms; attn_alpha and mlp_alpha
    return attention.num_params(d_model) + feed_forward.num_params(d_model) + 2 * d_model;
  const int64_t norms = name == "peri_norm" ? 4 : 2;
  return attention.num_params(d_model) + feed_forward.num_params(d_model) +
         norms * layer_norm.num_params(d_model);
}

int64_t LMHeadSpec::num_params(int64_t d_model, int64_t vocab_size) const {
  int64_t params = layer_norm ? layer_norm->num_params(d_model) : 0;
  params += d_model * vocab_size;
  if (bias) params += vocab_size;
  if (normalized) params += vocab_size;  // sz
  return params;
}

int64_t Config::num_flops_per_token(int64_t seq_len) const {
  require(seq_len > 0, ErrorCode::kInvalidArgument,
          "seq_len must be positive (got " + std::to_string(seq_len) + ")");
  const ModelSpec& s = spec();
  // 6 FLOPs per parameter (2 for the matmul, times 3 for forward and backward); the block's
  // own norms are not counted, as in OLMo-core, while the LM head's norm is.
  int64_t flops = 0;
  for (const auto& block : s.blocks) {
    const auto& a = block.attention;
    flops += 6 * a.num_params(s.d_model);
    // QK^T and AV (2 matmuls x 2 ops x 3 for forward and backward) over the (query, key) pairs
    // a causal (sliding-window) mask keeps, per token, as OLMo-core 3.x counts them.
    const int64_t w = a.window_size.value_or(seq_len);
    const int64_t pairs = w >= seq_len ? seq_len * (seq_len + 1) / 2 : w * (w + 1) / 2 + (seq_len - w) * w;
    flops += 12 * a.n_heads * a.head_dim * pairs / seq_len;
    flops += 6 * block.feed_forward.num_params(s.d_model);
  }
  flops += 6 * s.lm_head.num_params(s.d_model, s.vocab_size);
  return flops;
}

}  // namespace olm
