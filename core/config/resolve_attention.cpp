// AttentionConfig with an attention name ("default", "normalized"): heads, RoPE and its
// scaling, QK-norm, backends, gates, sliding windows.
#include "core/config/internal.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm {
namespace config_internal {

// The per-head size of attention and GatedDeltaNet alike: head_dim, else d_model / n_heads.
int64_t resolve_head_dim(std::optional<int32_t> head_dim, int64_t d_model, int64_t n_heads, const std::string& field) {
  if (head_dim.has_value()) {
    require_positive(*head_dim, field + ".head_dim");
    return *head_dim;
  }
  require(d_model % n_heads == 0, ErrorCode::kInvalidConfig,
          "d_model (" + std::to_string(d_model) + ") must be divisible by " + field + ".n_heads (" +
              std::to_string(n_heads) + ") when " + field + ".head_dim is not set");
  return d_model / n_heads;
}

AttentionSpec resolve_attention(const fb::AttentionConfigT& in, int64_t d_model,
                                const std::string& field) {
  AttentionSpec out;
  const std::string name = or_default(in.name, "default");
  require_one_of(name, {"default", "normalized", "gated_delta_net"}, field + ".name");
  // GatedDeltaNet fields (schema/olm.fbs: sequence_mixer "gated_delta_net").
  if (const auto* f = first_field_refused(in, SequenceMixer::kAttention))
    fail(ErrorCode::kInvalidConfig,
         field + "." + f->name + ": only allowed with " + field + ".name \"gated_delta_net\" (got '" + name + "')");
  out.normalized = name == "normalized";
  if (out.normalized) {
    // OLMo-core's NormalizedAttention takes none of these.
    require(!in.bias.value_or(false), ErrorCode::kInvalidConfig, field + ".bias: normalized attention has no biases");
    require(!in.head_dim.has_value(), ErrorCode::kInvalidConfig,
            field + ".head_dim: normalized attention uses d_model / n_heads");
    require(!in.gate, ErrorCode::kInvalidConfig, field + ".gate: not supported by normalized attention");
    require(!in.use_head_qk_norm.value_or(false), ErrorCode::kInvalidConfig,
            field + ".use_head_qk_norm: not supported by normalized attention");
    require(!in.clip_qkv.has_value(), ErrorCode::kInvalidConfig, field + ".clip_qkv: not supported by normalized attention");
  }
  out.n_heads = in.n_heads;
  require_positive(out.n_heads, field + ".n_heads");
  out.n_kv_heads = in.n_kv_heads.has_value() ? *in.n_kv_heads : out.n_heads;
  require_positive(out.n_kv_heads, field + ".n_kv_heads");
  require(out.n_heads % out.n_kv_heads == 0, ErrorCode::kInvalidConfig,
          field + ".n_heads (" + std::to_string(out.n_heads) +
              ") must be divisible by " + field + ".n_kv_heads (" +
              std::to_string(out.n_kv_heads) + ")");
  out.head_dim = resolve_head_dim(in.head_dim, d_model, out.n_heads, field);
  out.bias = in.bias.has_value() ? *in.bias : !out.normalized;
  if (in.rope) {
    RoPESpec rope;
    rope.name = or_default(in.rope->name, "default");
    require_one_of(rope.name, {"default"}, field + ".rope.name");
    rope.theta = in.rope->theta;
    require_positive_finite(rope.theta, field + ".rope.theta");
    rope.full_precision = in.rope->full_precision;
    rope.partial_rotary_factor = in.rope->partial_rotary_factor;
    require(std::isfinite(rope.partial_rotary_factor) && rope.partial_rotary_factor > 0 &&
                rope.partial_rotary_factor <= 1,
            ErrorCode::kInvalidConfig, field + ".rope.partial_rotary_factor must be in (0, 1]");
    if (const auto* sc = in.rope->scaling.get()) {
      const std::string f = field + ".rope.scaling";
      RoPEScalingSpec scaling;
      scaling.name = sc->name;
      require_one_of(scaling.name, {"abf", "pi", "stepwise", "yarn", "dynamic_ntk"}, f + ".name");
      scaling.attention_rescale_factor = sc->attention_rescale_factor;
      require_positive_finite(scaling.attention_rescale_factor, f + ".attention_rescale_factor");
      scaling.new_theta = sc->new_theta;
      require_positive_finite(scaling.new_theta, f + ".new_theta");
      // dynamic_ntk's 1 is OLM's formula, base * (len / old_context_len)^(d / (d - 2)).
      const double default_factor = scaling.name == "pi"          ? 2.0
                                    : scaling.name == "stepwise"    ? 32.0
                                    : scaling.name == "dynamic_ntk" ? 1.0
                                                                    : 8.0;
      scaling.factor = sc->factor.value_or(default_factor);
      require_positive_finite(scaling.factor, f + ".factor");
      scaling.low_freq_proportion = sc->low_freq_proportion;
      scaling.high_freq_proportion = sc->high_freq_proportion;
      require(scaling.low_freq_proportion >= 0 && scaling.low_freq_proportion < 1 &&
                  scaling.high_freq_proportion > 0 && scaling.high_freq_proportion <= 1,
              ErrorCode::kInvalidConfig, f + ": low_freq_proportion must be in [0, 1) and high_freq_proportion in (0, 1]");
      scaling.old_context_len = sc->old_context_len;
      require_positive(scaling.old_context_len, f + ".old_context_len");
      scaling.beta_fast = sc->beta_fast;
      scaling.beta_slow = sc->beta_slow;
      require_positive(scaling.beta_fast, f + ".beta_fast");
      require_positive(scaling.beta_slow, f + ".beta_slow");
      if (scaling.name == "dynamic_ntk")
        require(scaling.factor >= 1, ErrorCode::kInvalidConfig, f + ".factor must be >= 1 for dynamic_ntk");
      rope.scaling = scaling;
    }
    rope.interleaved = in.rope->interleaved;
    if (in.rope->xpos_scale_base.has_value()) {
      require_positive_finite(*in.rope->xpos_scale_base, field + ".rope.xpos_scale_base");
      rope.xpos_scale_base = *in.rope->xpos_scale_base;
    }
    require(!in.rope->no_global_rope || in.sliding_window, ErrorCode::kInvalidConfig,
            field + ".rope.no_global_rope requires " + field + ".sliding_window");
    const auto rotary_dim = static_cast<int64_t>(static_cast<double>(out.head_dim) * rope.partial_rotary_factor);
    require(rotary_dim % 2 == 0 && rotary_dim > 0, ErrorCode::kInvalidConfig,
            field + ".head_dim (" + std::to_string(out.head_dim) + ") times rope.partial_rotary_factor gives " +
                std::to_string(rotary_dim) + " rotary dimensions; RoPE needs a positive even number");
    require(!(rope.scaling && rope.scaling->name == "dynamic_ntk") || rotary_dim > 2, ErrorCode::kInvalidConfig,
            field + ".rope.scaling: dynamic_ntk needs more than 2 rotary dimensions (its exponent is dim / (dim - 2))");
    out.rope = rope;
  }
  if (in.clip_qkv.has_value()) {
    require_positive_finite(*in.clip_qkv, field + ".clip_qkv");
    out.clip_qkv = *in.clip_qkv;
  }
  if (in.qk_norm) out.qk_norm = resolve_layer_norm(*in.qk_norm, field + ".qk_norm");
  out.use_head_qk_norm = in.use_head_qk_norm.has_value() ? *in.use_head_qk_norm : false;
  out.dropout = in.dropout.has_value() ? *in.dropout : 0.0;
  require_probability(out.dropout, field + ".dropout");
  if (in.softcap.has_value()) {
    require_positive_finite(*in.softcap, field + ".softcap");
    out.softcap = *in.softcap;
  }
  // SDPA cannot soft-cap scores: soft-capping defaults to the explicit softmax.
  out.alibi = in.alibi.value_or(false);
  out.backend = or_default(in.backend, out.softcap ? "explicit" : "torch");
  require_one_of(out.backend, {"torch", "explicit"}, field + ".backend");
  require(!(out.softcap && out.backend == "torch"), ErrorCode::kInvalidConfig,
          field + ".softcap needs " + field + ".backend \"explicit\" (SDPA cannot soft-cap scores)");
  if (in.gate) {
    GateSpec gate;
    const std::string granularity = or_default(in.gate->granularity, "headwise");
    require_one_of(granularity, {"headwise", "elementwise"}, field + ".gate.granularity");
    gate.elementwise = granularity == "elementwise";
    gate.full_precision = in.gate->full_precision;
    out.gate = gate;
  }
  return out;
}

// olmo_core.nn.attention.SlidingWindowAttentionConfig._get_window_size: -1 is full attention.
int64_t window_for_layer(const fb::SlidingWindowAttentionConfigT& sw, int64_t layer, int64_t n_layers,
                         const std::string& field) {
  // The whole pattern is checked before the early returns, so a bad entry fails whatever
  // n_layers is.
  require(!sw.pattern.empty(), ErrorCode::kInvalidConfig, field + ".pattern: empty");
  for (int32_t window : sw.pattern)
    require(window > 0 || window == -1, ErrorCode::kInvalidConfig,
            field + ".pattern: window sizes must be positive or -1 (got " + std::to_string(window) + ")");
  if (sw.force_full_attention_on_first_layer && layer == 0) return -1;
  if (sw.force_full_attention_on_last_layer && layer == n_layers - 1) return -1;
  const int64_t effective = sw.force_full_attention_on_first_layer ? layer - 1 : layer;
  const auto n = static_cast<int64_t>(sw.pattern.size());
  return sw.pattern[static_cast<size_t>(((effective % n) + n) % n)];
}

}  // namespace config_internal

}  // namespace olm
