// Parameter and FLOP accounting, mirroring OLMo-core's num_params (config side) and
// num_flops_per_token (module side) formulas term by term.
#include "core/config/config.h"

#include <limits>
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

// GatedDeltaNetConfig.num_params: seven projections, A_log and dt_bias, the three depthwise
// convolutions (and their biases), and the gated output norm's weight.
int64_t GatedDeltaNetSpec::num_params(int64_t d_model) const {
  int64_t params = d_model * (2 * key_dim() + 2 * value_dim() + 2 * n_v_heads);  // w_q w_k w_v w_g w_a w_b
  params += value_dim() * d_model;                                                // w_out
  params += 2 * n_v_heads;                                                        // A_log, dt_bias
  params += conv_size * (2 * key_dim() + value_dim());
  if (conv_bias) params += 2 * key_dim() + value_dim();
  params += head_v_dim;  // o_norm
  return params;
}

// GatedDeltaNet.num_flops_per_token (independent of seq_len): 6 per projection weight, 6 per
// convolution tap, and 2 * 3 * 4 per recurrent state entry.
int64_t GatedDeltaNetSpec::num_flops_per_token(int64_t d_model) const {
  const int64_t linear = d_model * (2 * key_dim() + 2 * value_dim() + 2 * n_v_heads) + value_dim() * d_model;
  const int64_t conv = conv_size * (2 * key_dim() + value_dim());
  const int64_t state = n_v_heads * head_dim * head_v_dim;
  return 6 * linear + 6 * conv + 24 * state;
}

int64_t FeedForwardSpec::num_params(int64_t d_model) const {
  const bool gated = name != "classic";
  int64_t params = (gated ? 3 : 2) * d_model * hidden_size;
  if (bias) params += (gated ? 2 : 1) * hidden_size + d_model;
  if (name == "normalized") params += 2 * hidden_size;  // sw1, sw3
  return params;
}

// MoEConfig.num_params: router (d_model x num_experts, no bias), three expert matrices per
// expert, and the shared MLP.
int64_t MoESpec::num_params(int64_t d_model) const {
  int64_t params = d_model * num_experts + 3 * d_model * hidden_size * num_experts;
  if (shared_mlp) params += shared_mlp->num_params(d_model);
  return params;
}

// MoEConfig.num_active_params: only top_k experts' matrices count.
int64_t MoESpec::num_active_params(int64_t d_model) const {
  return num_params(d_model) - 3 * d_model * hidden_size * (num_experts - router.top_k);
}

// TransformerBlockConfig.num_params: one norm per sublayer (attention, dense feed-forward, MoE),
// two more for peri_norm.
int64_t BlockSpec::num_params(int64_t d_model) const {
  if (name == "normalized")  // no norms; attn_alpha and mlp_alpha
    return attention.num_params(d_model) + feed_forward.num_params(d_model) + 2 * d_model;
  const int64_t mixer = gated_delta_net ? gated_delta_net->num_params(d_model) : attention.num_params(d_model);
  int64_t params = mixer + layer_norm.num_params(d_model);
  if (has_feed_forward()) params += feed_forward.num_params(d_model) + layer_norm.num_params(d_model);
  if (moe) params += moe->num_params(d_model) + layer_norm.num_params(d_model);
  if (name == "peri_norm") params += 2 * layer_norm.num_params(d_model);
  return params;
}

int64_t BlockSpec::num_active_params(int64_t d_model) const {
  return num_params(d_model) - (moe ? moe->num_params(d_model) - moe->num_active_params(d_model) : 0);
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
  const auto too_large = [&] {
    fail(ErrorCode::kInvalidArgument, "seq_len (" + std::to_string(seq_len) +
                                          ") is too large: the FLOPs per token do not fit in a 64-bit integer");
  };
  // Every term is exact in 128-bit arithmetic once the attention term is known to fit: the
  // parameter counts are below 1e15 (checked when resolving), and the attention term's
  // numerator is its result times seq_len.
  using Wide = __int128;
  constexpr Wide kMax = std::numeric_limits<int64_t>::max();
  // 6 FLOPs per parameter (2 for the matmul, times 3 for forward and backward); the block's
  // own norms are not counted, as in OLMo-core, while the LM head's norm is.
  Wide flops = 0;
  for (const auto& block : s.blocks) {
    const auto& a = block.attention;
    if (block.gated_delta_net) {
      flops += block.gated_delta_net->num_flops_per_token(s.d_model);
    } else {
      flops += Wide{6} * a.num_params(s.d_model);
      // QK^T and AV (2 matmuls x 2 ops x 3 for forward and backward) over the (query, key) pairs
      // a causal (sliding-window) mask keeps, per token, as OLMo-core 3.x counts them.
      const int64_t w = a.window_size.value_or(seq_len);
      const long double estimate = 12.0L * a.n_heads * a.head_dim *
                                   (w >= seq_len ? (seq_len + 1.0L) / 2 : static_cast<long double>(w));
      if (estimate > 4e18L) too_large();
      const Wide pairs = w >= seq_len ? Wide{seq_len} * (seq_len + 1) / 2 : Wide{w} * (w + 1) / 2 + Wide{seq_len - w} * w;
      flops += Wide{12} * a.n_heads * a.head_dim * pairs / seq_len;
    }
    if (block.moe) {
      // MoEBase.num_flops_per_token: router and shared MLP parameters, plus the experts'
      // parameters times top_k / num_experts (exact: the product is divisible). OLMo-core's
      // hybrid blocks inherit this and leave their dense feed-forward uncounted; so do we.
      const auto& m = *block.moe;
      flops += Wide{6} * s.d_model * m.num_experts;
      if (m.shared_mlp) flops += Wide{6} * m.shared_mlp->num_params(s.d_model);
      flops += Wide{6} * (Wide{3} * s.d_model * m.hidden_size * m.router.top_k);
    } else {
      flops += Wide{6} * block.feed_forward.num_params(s.d_model);
    }
    if (flops > kMax) too_large();
  }
  flops += Wide{6} * s.lm_head.num_params(s.d_model, s.vocab_size);
  if (flops > kMax) too_large();
  return static_cast<int64_t>(flops);
}

}  // namespace olm
