#include "core/config/config.h"

#include <flatbuffers/idl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <type_traits>

#include "core/error.h"
#include "core/io/json.h"
#include "olm_schema_text.h"

namespace olm {
namespace {

// A fresh parser per call: FlatBuffers parsers are not thread-safe and ours is cheap to build.
std::unique_ptr<flatbuffers::Parser> make_parser(const char* root_type) {
  flatbuffers::IDLOptions opts;
  opts.strict_json = true;  // quoted field names: the output is standard JSON
  opts.indent_step = 2;
  opts.skip_unexpected_fields_in_json = false;  // unknown fields are errors
  opts.output_default_scalars_in_json = false;
  auto parser = std::make_unique<flatbuffers::Parser>(opts);
  if (!parser->Parse(schema_text::kOlmFbs) || !parser->SetRootType(root_type)) {
    fail(ErrorCode::kInternal, "embedded schema failed to parse: " + parser->error_);
  }
  return parser;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

void require_one_of(const std::string& value, const std::vector<std::string>& known,
                    const std::string& field) {
  for (const auto& k : known)
    if (value == k) return;
  fail(ErrorCode::kInvalidConfig,
       field + ": unknown value '" + value + "' (known: " + join(known) + ")");
}

std::string or_default(const std::string& value, const char* fallback) {
  return value.empty() ? std::string(fallback) : value;
}

void require_positive(int64_t value, const std::string& field) {
  require(value > 0, ErrorCode::kInvalidConfig,
          field + " must be positive (got " + std::to_string(value) + ")");
}

void require_positive_finite(double value, const std::string& field) {
  std::ostringstream os;
  os << field << " must be a positive finite number (got " << value << ")";
  require(std::isfinite(value) && value > 0, ErrorCode::kInvalidConfig, os.str());
}

void require_probability(double value, const std::string& field) {
  std::ostringstream os;
  os << field << " must be in [0, 1) (got " << value << ")";
  require(std::isfinite(value) && value >= 0 && value < 1, ErrorCode::kInvalidConfig, os.str());
}

const flatbuffers::StructDef& schema_table(const char* root_type);

// The first field set in `in` (in schema order) that `mixer` does not accept, or nullptr.
// "Set" is what a packed buffer holds: an optional scalar with a value, a non-empty string, a
// present table, a non-empty vector, or a scalar with a default that differs from it.
const AttentionConfigField* first_field_refused(const fb::AttentionConfigT& in, SequenceMixer mixer) {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::AttentionConfig::Pack(builder, &in));
  const auto* table = flatbuffers::GetRoot<flatbuffers::Table>(builder.GetBufferPointer());
  for (const auto& f : attention_config_fields())
    if (f.accepted_by != SequenceMixer::kAny && f.accepted_by != mixer && table->CheckField(f.vtable_offset))
      return &f;
  return nullptr;
}

LayerNormSpec resolve_layer_norm(const fb::LayerNormConfigT& in, const std::string& field) {
  LayerNormSpec out;
  out.name = or_default(in.name, "default");
  require_one_of(out.name, {"default", "rms", "qwen_rms", "l2_norm"}, field + ".name");
  out.eps = in.eps.has_value() ? *in.eps : 1e-5;
  require_positive_finite(out.eps, field + ".eps");
  // OLMo-core's L2Norm has no parameters (and refuses them).
  const bool l2 = out.name == "l2_norm";
  out.elementwise_affine = in.elementwise_affine.has_value() ? *in.elementwise_affine : !l2;
  out.bias = in.bias.has_value() ? *in.bias : !l2;
  require(!l2 || (!out.elementwise_affine && !out.bias), ErrorCode::kInvalidConfig,
          field + ": l2_norm has no parameters (elementwise_affine and bias must be false or unset)");
  out.full_precision = in.full_precision.has_value() ? *in.full_precision : true;
  return out;
}

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

FeedForwardSpec resolve_feed_forward(const fb::FeedForwardConfigT& in, int64_t d_model, const std::string& field) {
  FeedForwardSpec out;
  out.name = or_default(in.name, "default");
  require_one_of(out.name, {"default", "classic", "normalized"}, field + ".name");
  out.hidden_size = in.hidden_size;
  if (in.ff_multiplier.has_value()) {
    require(in.hidden_size == 0, ErrorCode::kInvalidConfig,
            field + ": give hidden_size or ff_multiplier, not both");
    require_positive_finite(*in.ff_multiplier, field + ".ff_multiplier");
    // OLM: int(ff_multiplier * embed_dim), truncated as Python's int() does.
    const double hidden = *in.ff_multiplier * static_cast<double>(d_model);
    require(hidden < 2147483648.0, ErrorCode::kInvalidConfig, field + ".ff_multiplier is absurdly large");
    out.hidden_size = static_cast<int64_t>(hidden);
  }
  require_positive(out.hidden_size, field + ".hidden_size");
  out.bias = in.bias.has_value() ? *in.bias : out.name != "normalized";
  out.activation = or_default(in.activation, "silu");
  require_one_of(out.activation, activation_names(), field + ".activation");
  if (out.name == "normalized") {
    require(!out.bias, ErrorCode::kInvalidConfig, field + ".bias: the normalized feed-forward has no biases");
    require(out.activation == "silu", ErrorCode::kInvalidConfig,
            field + ".activation: the normalized feed-forward supports only 'silu' (got '" + out.activation + "')");
  }
  return out;
}

MoESpec resolve_moe(const fb::MoEConfigT& in, int64_t d_model, int64_t n_layers, const std::string& field);

// GatedDeltaNetConfig, from the "attention" slot with name "gated_delta_net". OLMo-core asserts
// what we check here; attention-only fields are refused by name.
GatedDeltaNetSpec resolve_gated_delta_net(const fb::AttentionConfigT& in, int64_t d_model,
                                          const std::string& field) {
  // Attention fields (schema/olm.fbs: sequence_mixer "attention").
  if (const auto* f = first_field_refused(in, SequenceMixer::kGatedDeltaNet))
    fail(ErrorCode::kInvalidConfig,
         field + "." + f->name + ": not supported by " + field + ".name \"gated_delta_net\" (a GatedDeltaNet)");
  GatedDeltaNetSpec g;
  g.n_heads = in.n_heads;
  require_positive(g.n_heads, field + ".n_heads");
  g.n_v_heads = in.n_v_heads.value_or(g.n_heads);
  require_positive(g.n_v_heads, field + ".n_v_heads");
  require(g.n_v_heads >= g.n_heads && g.n_v_heads % g.n_heads == 0, ErrorCode::kInvalidConfig,
          field + ".n_v_heads (" + std::to_string(g.n_v_heads) + ") must be a multiple of " + field + ".n_heads (" +
              std::to_string(g.n_heads) + ")");
  g.head_dim = resolve_head_dim(in.head_dim, d_model, g.n_heads, field);
  g.expand_v = in.expand_v.value_or(2.0);
  require_positive_finite(g.expand_v, field + ".expand_v");
  // OLMo-core: int(head_dim * expand_v), asserted to be (close to) the exact product.
  const double v_dim = static_cast<double>(g.head_dim) * g.expand_v;
  g.head_v_dim = static_cast<int64_t>(v_dim);
  require(v_dim < 2147483648.0 && g.head_v_dim > 0 && std::abs(v_dim - static_cast<double>(g.head_v_dim)) <= 1e-5 * v_dim,
          ErrorCode::kInvalidConfig,
          field + ".expand_v: head_dim (" + std::to_string(g.head_dim) + ") * expand_v must be a positive integer");
  g.allow_neg_eigval = in.allow_neg_eigval.value_or(true);
  g.conv_size = in.conv_size.value_or(4);
  require_positive(g.conv_size, field + ".conv_size");
  g.conv_bias = in.conv_bias.value_or(false);
  g.norm_eps = in.norm_eps.value_or(1e-5);
  require_positive_finite(g.norm_eps, field + ".norm_eps");
  return g;
}

BlockSpec resolve_block(const fb::TransformerBlockConfigT& block, int64_t d_model, int64_t n_layers,
                        const std::string& field) {
  require(block.attention != nullptr, ErrorCode::kInvalidConfig, field + ".attention: required field is missing");
  BlockSpec b;
  b.name = or_default(block.name, "default");
  require_one_of(b.name, {"default", "reordered_norm", "default_scaled", "peri_norm", "parallel", "normalized", "moe",
                          "moe_reordered_norm", "moe_hybrid", "moe_hybrid_reordered_norm"},
                 field + ".name");
  const bool normalized = b.name == "normalized";
  const bool moe_block = b.name.rfind("moe", 0) == 0;
  const bool hybrid = b.name == "moe_hybrid" || b.name == "moe_hybrid_reordered_norm";
  require(normalized || block.layer_norm != nullptr, ErrorCode::kInvalidConfig,
          field + ".layer_norm: required field is missing");
  require(!normalized || block.layer_norm == nullptr, ErrorCode::kInvalidConfig,
          field + ".layer_norm: normalized blocks have no layer norms");
  if (block.attention->name == "gated_delta_net") {
    require(!normalized, ErrorCode::kInvalidConfig,
            field + ".attention.name: normalized blocks need normalized attention (got \"gated_delta_net\")");
    b.gated_delta_net = resolve_gated_delta_net(*block.attention, d_model, field + ".attention");
    b.attention.n_heads = b.attention.n_kv_heads = b.gated_delta_net->n_heads;
    b.attention.head_dim = b.gated_delta_net->head_dim;
    b.attention.bias = false;
  } else {
    b.attention = resolve_attention(*block.attention, d_model, field + ".attention");
  }
  if (block.layer_norm) b.layer_norm = resolve_layer_norm(*block.layer_norm, field + ".layer_norm");
  if (!moe_block || hybrid) {
    require(block.feed_forward != nullptr, ErrorCode::kInvalidConfig,
            field + ".feed_forward: required field is missing");
    b.feed_forward = resolve_feed_forward(*block.feed_forward, d_model, field + ".feed_forward");
  } else {
    require(block.feed_forward == nullptr, ErrorCode::kInvalidConfig,
            field + ".feed_forward: not allowed with " + field + ".name '" + b.name + "' (its feed-forward is " + field +
                ".feed_forward_moe)");
    b.feed_forward.hidden_size = 0;
  }
  if (moe_block) {
    require(block.feed_forward_moe != nullptr, ErrorCode::kInvalidConfig,
            field + ".feed_forward_moe: required by " + field + ".name '" + b.name + "'");
    require(!block.attention_residual_alpha.has_value() && !block.feed_forward_residual_alpha.has_value(),
            ErrorCode::kInvalidConfig,
            field + ".attention_residual_alpha and " + field +
                ".feed_forward_residual_alpha: not supported by MoE blocks (as in OLMo-core)");
    b.moe = resolve_moe(*block.feed_forward_moe, d_model, n_layers, field + ".feed_forward_moe");
  } else {
    require(block.feed_forward_moe == nullptr, ErrorCode::kInvalidConfig,
            field + ".feed_forward_moe: only allowed with an MoE " + field + ".name (got '" + b.name + "')");
  }
  b.dropout = block.dropout.has_value() ? *block.dropout : 0.0;
  require_probability(b.dropout, field + ".dropout");
  if (normalized) {
    require(b.attention.normalized, ErrorCode::kInvalidConfig,
            field + ".attention.name: normalized blocks need normalized attention");
    require(b.feed_forward.name == "normalized", ErrorCode::kInvalidConfig,
            field + ".feed_forward.name: normalized blocks need the normalized feed-forward");
  }
  b.attention_residual_alpha = block.attention_residual_alpha.value_or(1.0);
  b.feed_forward_residual_alpha = block.feed_forward_residual_alpha.value_or(1.0);
  require(std::isfinite(b.attention_residual_alpha) && std::isfinite(b.feed_forward_residual_alpha),
          ErrorCode::kInvalidConfig,
          field + ".attention_residual_alpha and " + field + ".feed_forward_residual_alpha must be finite");
  require(block.parallel_merge.empty() || b.name == "parallel", ErrorCode::kInvalidConfig,
          field + ".parallel_merge: only allowed with " + field + ".name \"parallel\" (got '" + b.name + "')");
  b.parallel_merge = or_default(block.parallel_merge, "sum");
  require_one_of(b.parallel_merge, {"sum", "mean"}, field + ".parallel_merge");
  return b;
}

// olmo_core.nn.transformer.config.resolve_block_configs: one block config per layer, from
// `block` (optionally replaced at some layers by `block_overrides`) or from `named_blocks`
// cycled through `block_pattern`; paired with the config path that error messages name.
std::vector<std::pair<const fb::TransformerBlockConfigT*, std::string>> block_configs_per_layer(
    const fb::TransformerConfigT& in) {
  const auto n_layers = static_cast<size_t>(in.n_layers);
  std::vector<std::pair<const fb::TransformerBlockConfigT*, std::string>> out;
  if (in.named_blocks.empty()) {
    require(in.block != nullptr, ErrorCode::kInvalidConfig,
            "block: required field is missing (or give named_blocks and block_pattern)");
    require(in.block_pattern.empty(), ErrorCode::kInvalidConfig,
            "block_pattern: needs named_blocks to choose from (it is not supported with a single block)");
    out.assign(n_layers, {in.block.get(), "block"});
    for (size_t k = 0; k < in.block_overrides.size(); ++k) {
      const auto& o = in.block_overrides[k];
      const std::string f = "block_overrides[" + std::to_string(k) + "]";
      require(o && o->block, ErrorCode::kInvalidConfig, f + ".block: required field is missing");
      require(o->layer >= 0 && static_cast<size_t>(o->layer) < n_layers, ErrorCode::kInvalidConfig,
              f + ".layer must be in [0, n_layers) = [0, " + std::to_string(n_layers) + ") (got " +
                  std::to_string(o->layer) + ")");
      out[static_cast<size_t>(o->layer)] = {o->block.get(), f + ".block"};
    }
    return out;
  }
  require(in.block == nullptr, ErrorCode::kInvalidConfig,
          "block: give either block or named_blocks, not both");
  require(in.block_overrides.empty(), ErrorCode::kInvalidConfig,
          "block_overrides: not supported with named_blocks; choose per-layer blocks with block_pattern");
  require(!in.block_pattern.empty(), ErrorCode::kInvalidConfig,
          "block_pattern: required and non-empty when named_blocks is given");
  std::map<std::string, const fb::TransformerBlockConfigT*> by_name;
  std::string known;
  for (size_t k = 0; k < in.named_blocks.size(); ++k) {
    const auto& nb = in.named_blocks[k];
    const std::string f = "named_blocks[" + std::to_string(k) + "]";
    require(nb && !nb->name.empty(), ErrorCode::kInvalidConfig, f + ".name: required and non-empty");
    require(nb->block != nullptr, ErrorCode::kInvalidConfig, f + ".block: required field is missing");
    require(by_name.emplace(nb->name, nb->block.get()).second, ErrorCode::kInvalidConfig,
            f + ".name: '" + nb->name + "' is used twice");
    known += (known.empty() ? "" : ", ") + nb->name;
  }
  for (size_t k = 0; k < in.block_pattern.size(); ++k)
    require(by_name.count(in.block_pattern[k]) != 0, ErrorCode::kInvalidConfig,
            "block_pattern[" + std::to_string(k) + "]: unknown block '" + in.block_pattern[k] +
                "' (named_blocks: " + known + ")");
  for (size_t i = 0; i < n_layers; ++i) {
    const std::string& name = in.block_pattern[i % in.block_pattern.size()];
    out.emplace_back(by_name.at(name), "named_blocks[" + name + "]");
  }
  return out;
}

// olmo_core.nn.moe.MoEConfig / MoERouterConfig. OLMo-core raises on the same impossible
// settings (top_k > num_experts in torch.topk, capacity_factor with dropless as a TypeError).
MoESpec resolve_moe(const fb::MoEConfigT& in, int64_t d_model, int64_t n_layers, const std::string& field) {
  MoESpec out;
  const std::string name = or_default(in.name, "default");
  require_one_of(name, {"default", "dropless"}, field + ".name");
  out.dropless = name == "dropless";
  out.num_experts = in.num_experts;
  require_positive(out.num_experts, field + ".num_experts");
  out.hidden_size = in.hidden_size;
  require_positive(out.hidden_size, field + ".hidden_size");
  if (in.capacity_factor.has_value()) {
    require(!out.dropless, ErrorCode::kInvalidConfig,
            field + ".capacity_factor: not allowed with " + field + ".name 'dropless' (dropless MoEs have no capacity)");
    require_positive_finite(*in.capacity_factor, field + ".capacity_factor");
    out.capacity_factor = *in.capacity_factor;
  }
  const std::string rf = field + ".router";
  if (const auto* r = in.router.get()) {
    require_one_of(or_default(r->name, "default"), {"default"}, rf + ".name");
    out.router.top_k = r->top_k;
    if (r->jitter_eps.has_value()) {
      require(std::isfinite(*r->jitter_eps) && *r->jitter_eps >= 0 && *r->jitter_eps < 1,
              ErrorCode::kInvalidConfig, rf + ".jitter_eps must be in [0, 1)");
      out.router.jitter_eps = *r->jitter_eps;
    }
    if (r->normalize_expert_weights.has_value()) {
      require_positive_finite(*r->normalize_expert_weights, rf + ".normalize_expert_weights");
      out.router.normalize_expert_weights = *r->normalize_expert_weights;
    }
    if (r->bias_gamma.has_value()) {
      require_positive_finite(*r->bias_gamma, rf + ".bias_gamma");  // OLMo-core asserts > 0
      out.router.bias_gamma = *r->bias_gamma;
    }
    const std::string gating = or_default(r->gating_function, "softmax");
    require_one_of(gating, {"softmax", "sigmoid"}, rf + ".gating_function");
    out.router.sigmoid = gating == "sigmoid";
  }
  require_positive(out.router.top_k, rf + ".top_k");
  require(out.router.top_k <= out.num_experts, ErrorCode::kInvalidConfig,
          rf + ".top_k (" + std::to_string(out.router.top_k) + ") must not exceed " + field +
              ".num_experts (" + std::to_string(out.num_experts) + ")");
  if (in.shared_mlp) out.shared_mlp = resolve_feed_forward(*in.shared_mlp, d_model, field + ".shared_mlp");
  const double scale = in.scale_loss_by_num_layers ? static_cast<double>(n_layers) : 1.0;
  const double lb = in.lb_loss_weight.value_or(0.01);
  require(std::isfinite(lb) && lb >= 0, ErrorCode::kInvalidConfig, field + ".lb_loss_weight must be finite and >= 0");
  if (lb > 0) out.lb_loss_weight = lb / scale;
  const std::string granularity = or_default(in.lb_loss_granularity, "local_batch");
  require_one_of(granularity, {"local_batch", "instance"}, field + ".lb_loss_granularity");
  out.lb_loss_instance = granularity == "instance";
  if (in.z_loss_weight.has_value()) {
    require(std::isfinite(*in.z_loss_weight) && *in.z_loss_weight >= 0, ErrorCode::kInvalidConfig,
            field + ".z_loss_weight must be finite and >= 0");
    out.z_loss_weight = *in.z_loss_weight / scale;
  }
  return out;
}

// FlatBuffers reports "LINE: COL: error: ..." without the field; name the last JSON key
// before that position so "wrong type" errors say which field is wrong.
std::string with_field_name(const std::string& source, const std::string& error) {
  // These already name their field, which is not the last key before the position.
  if (error.find("required field is missing") != std::string::npos ||
      error.find("unknown field") != std::string::npos ||
      error.find("field set more than once") != std::string::npos)
    return error;
  size_t offset = std::string::npos;
  // Range errors are raised when the table ends, far from the field: find the bad constant.
  const std::string marker = "invalid number: \"";
  const auto m = error.find(marker);
  if (m != std::string::npos) {
    const auto end = error.find('"', m + marker.size());
    const auto value = error.substr(m + marker.size(), end - m - marker.size());
    // The value as a JSON string, else as a bare token (not inside a longer word or number).
    offset = value.empty() ? std::string::npos : source.find('"' + value + '"');
    for (size_t at = source.find(value); offset == std::string::npos && at != std::string::npos;
         at = source.find(value, at + 1)) {
      const auto bare = [&](size_t i) { return i >= source.size() || !(std::isalnum(static_cast<unsigned char>(source[i])) || source[i] == '.' || source[i] == '_'); };
      if ((at == 0 || bare(at - 1)) && bare(at + value.size())) offset = at;
    }
  } else {
    int line = 0, col = 0;
    if (std::sscanf(error.c_str(), "%d: %d:", &line, &col) != 2 || line < 1) return error;
    offset = 0;
    for (int l = 1; l < line && offset != std::string::npos; ++l) {
      offset = source.find('\n', offset);
      if (offset != std::string::npos) ++offset;
    }
    if (offset != std::string::npos) offset = std::min(source.size(), offset + static_cast<size_t>(std::max(col, 0)));
  }
  if (offset == std::string::npos) return error;
  // Walk back to the nearest `"key" :`.
  for (size_t i = offset; i-- > 0;) {
    if (source[i] != ':') continue;
    size_t q = i;
    while (q > 0 && std::isspace(static_cast<unsigned char>(source[q - 1]))) --q;
    if (q == 0 || source[q - 1] != '"') continue;
    const size_t end = q - 1;
    const size_t start = source.rfind('"', end - 1);
    if (start == std::string::npos) break;
    std::string message = error;
    // FlatBuffers' wording when a string stands where a number or boolean belongs.
    const std::string enum_hint = "enum values need to be qualified by an enum type";
    const auto hint = message.find(enum_hint);
    if (hint != std::string::npos)
      message.replace(hint, enum_hint.size(), "wrong type: a string where a number or boolean is expected");
    return "field '" + source.substr(start + 1, end - start - 1) + "': " + message;
  }
  return error;
}

// What a root table is called in messages.
std::string root_description(const std::string& root_type) {
  if (root_type == "TransformerConfig") return "model config";
  if (root_type == "TrainConfig") return "train config";
  if (root_type == "CheckpointMeta") return "checkpoint metadata";
  return root_type;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "did you mean 'x'?" for a near miss (Levenshtein distance at most 2, or a third of the
// name), else the list of known names.
std::string suggestion(const std::string& name, const std::vector<std::string>& known) {
  const std::string* best = nullptr;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const auto& k : known) {
    const size_t d = edit_distance(name, k);
    if (d < best_distance) best_distance = d, best = &k;
  }
  if (best && best_distance <= std::max<size_t>(2, name.size() / 3)) return "did you mean '" + *best + "'?";
  return "known fields: " + join(known);
}

// The value as written, for "expected X, not <this>".
std::string describe(const io::Json& v) {
  using io::Json;
  switch (v.kind) {
    case Json::kNull: return "null";
    case Json::kBool: return v.boolean ? "true" : "false";
    case Json::kInt:
    case Json::kOther: return v.number;
    case Json::kString: {
      const std::string quoted = io::quote_json(v.string.size() > 40 ? v.string.substr(0, 40) + "..." : v.string);
      return "the string " + quoted;
    }
    case Json::kArray: return "an array";
    case Json::kObject: return "an object";
  }
  return "?";
}

// Checks a JSON document against a schema table before FlatBuffers' parser sees it: every
// key is a field of its table (else the nearest field name is suggested), every value has the
// field's kind and fits its type, required fields are present, strings are UTF-8. Errors
// name the source, line and column, and the field's path ("optimizer.lr").
class JsonSchemaChecker {
 public:
  JsonSchemaChecker(std::string_view text, std::string source, std::string root)
      : text_(text), source_(std::move(source)), root_(std::move(root)) {}

  void table(const flatbuffers::StructDef& def, const io::Json& object, const std::string& path) {
    std::vector<std::string> known;
    for (const auto* f : def.fields.vec)
      if (!f->deprecated) known.push_back(f->name);
    std::vector<const flatbuffers::FieldDef*> seen;
    for (size_t i = 0; i < object.object.size(); ++i) {
      const auto& [key, value] = object.object[i];
      const size_t at = i < object.key_offsets.size() ? object.key_offsets[i] : value.offset;
      const auto* field = def.fields.Lookup(key);
      if (!field || field->deprecated)
        error(at, "unknown field '" + key + "' in " + (path.empty() ? root_ : "'" + path + "'") + "; " +
                      suggestion(key, known));
      const std::string child = path.empty() ? key : path + "." + key;
      if (std::find(seen.begin(), seen.end(), field) != seen.end())
        error(at, "field '" + child + "' is set more than once");
      seen.push_back(field);
      this->value(field->value.type, value, child);
    }
    for (const auto* f : def.fields.vec) {
      if (!f->IsRequired()) continue;
      bool present = false;
      for (const auto& [key, value] : object.object) present = present || (key == f->name && value.kind != io::Json::kNull);
      if (!present)
        error(object.offset, "field '" + (path.empty() ? f->name : path + "." + f->name) + "' is required but missing");
    }
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& what) const {
    const auto at = io::position_of(text_, offset);
    fail(ErrorCode::kParse, source_ + ", line " + std::to_string(at.line) + ", column " + std::to_string(at.column) +
                                ": " + what);
  }
  [[noreturn]] void expected(const io::Json& v, const std::string& path, const std::string& what) const {
    error(v.offset, "field '" + path + "': expected " + what + ", not " + describe(v));
  }

  void value(const flatbuffers::Type& type, const io::Json& v, const std::string& path) {
    using io::Json;
    using flatbuffers::BaseType;
    if (v.kind == Json::kNull) return;  // null: the field is unset
    const BaseType base = type.base_type;
    if (type.enum_def) {
      // Enums (none in olm.fbs today): FlatBuffers takes a name or a number.
      if (v.kind != Json::kString && v.kind != Json::kInt) expected(v, path, "an enum name or an integer");
      return;
    }
    if (base == flatbuffers::BASE_TYPE_BOOL) {
      if (v.kind != Json::kBool) expected(v, path, "true or false");
    } else if (base == flatbuffers::BASE_TYPE_FLOAT || base == flatbuffers::BASE_TYPE_DOUBLE) {
      if (v.kind != Json::kInt && v.kind != Json::kOther) expected(v, path, "a number");
      // Locale-independent; out of range is an overflow unless the exponent is negative
      // (underflow reads as a denormal or 0, as FlatBuffers' parser does).
      double d = 0;
      const auto r = std::from_chars(v.number.data(), v.number.data() + v.number.size(), d);
      const bool underflow = r.ec == std::errc::result_out_of_range &&
                             (v.number.find("e-") != std::string::npos || v.number.find("E-") != std::string::npos);
      const bool fits = underflow || (r.ec == std::errc() && (base == flatbuffers::BASE_TYPE_DOUBLE
                                                                   ? std::isfinite(d)
                                                                   : std::isfinite(static_cast<float>(d))));
      if (!fits) expected(v, path, "a finite number");
    } else if (flatbuffers::IsInteger(base)) {
      int64_t lo = 0;
      uint64_t hi = 0;
      switch (base) {
        case flatbuffers::BASE_TYPE_CHAR: lo = INT8_MIN, hi = INT8_MAX; break;
        case flatbuffers::BASE_TYPE_UCHAR: lo = 0, hi = UINT8_MAX; break;
        case flatbuffers::BASE_TYPE_SHORT: lo = INT16_MIN, hi = INT16_MAX; break;
        case flatbuffers::BASE_TYPE_USHORT: lo = 0, hi = UINT16_MAX; break;
        case flatbuffers::BASE_TYPE_INT: lo = INT32_MIN, hi = INT32_MAX; break;
        case flatbuffers::BASE_TYPE_UINT: lo = 0, hi = UINT32_MAX; break;
        case flatbuffers::BASE_TYPE_ULONG: lo = 0, hi = INT64_MAX; break;  // JSON integers we read are int64
        default: lo = INT64_MIN, hi = INT64_MAX; break;
      }
      const bool integral_text = v.kind == Json::kOther && v.number.find_first_of(".eE") == std::string::npos;
      if (v.kind != Json::kInt && !integral_text) expected(v, path, "an integer");
      if (v.kind != Json::kInt || v.integer < lo || (v.integer >= 0 && static_cast<uint64_t>(v.integer) > hi))
        expected(v, path, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    } else if (base == flatbuffers::BASE_TYPE_STRING) {
      if (v.kind != Json::kString) expected(v, path, "a string");
      size_t bad = 0;
      if (!io::valid_utf8(v.string, &bad))
        error(v.offset, "field '" + path + "': not valid UTF-8 (byte " + std::to_string(bad) + ")");
    } else if (base == flatbuffers::BASE_TYPE_STRUCT && type.struct_def) {
      if (v.kind != Json::kObject) expected(v, path, "an object");
      table(*type.struct_def, v, path);
    } else if (base == flatbuffers::BASE_TYPE_VECTOR) {
      if (v.kind != Json::kArray) expected(v, path, "an array");
      const flatbuffers::Type element = type.VectorType();
      for (size_t i = 0; i < v.array.size(); ++i) {
        const std::string child = path + "[" + std::to_string(i) + "]";
        if (v.array[i].kind == Json::kNull) error(v.array[i].offset, "field '" + child + "': null in an array");
        value(element, v.array[i], child);
      }
    }
    // Unions and fixed structs are not in olm.fbs; FlatBuffers' parser checks them.
  }

  std::string_view text_;
  std::string source_;
  std::string root_;
};

// The schema's text generation, our way: FlatBuffers 2.0 prints doubles with 12 fixed
// decimals (1e-17 becomes 0) and cannot print invalid UTF-8. This writes the shortest text
// that reads back to the same double, and refuses what it cannot write (a string that is not
// UTF-8, a non-finite number), naming the field: the same walk validates configs whichever
// door they came in by, so whatever is accepted can be written as JSON and read back.
class JsonWriter {
 public:
  explicit JsonWriter(ErrorCode code) : code_(code) {}

  std::string document(const flatbuffers::StructDef& def, const flatbuffers::Table* root, const std::string& prefix) {
    out_.clear();
    table(def, root, prefix, 0);
    out_ += "\n";
    return out_;
  }

 private:
  void newline(int depth) {
    out_ += "\n";
    out_.append(static_cast<size_t>(depth) * 2, ' ');
  }

  void table(const flatbuffers::StructDef& def, const flatbuffers::Table* t, const std::string& path, int depth) {
    require(!def.fixed, ErrorCode::kInternal, path + ": fixed structs are not supported");
    out_ += "{";
    bool first = true;
    for (const auto* f : def.fields.vec) {
      const auto offset = f->value.offset;
      if (f->deprecated || !t->CheckField(offset)) continue;
      out_ += first ? "" : ",";
      first = false;
      newline(depth + 1);
      out_ += io::quote_json(f->name) + ": ";
      field(f->value.type, t, offset, path.empty() ? f->name : path + "." + f->name, depth + 1);
    }
    if (!first) newline(depth);
    out_ += "}";
  }

  template <class T>
  void scalar_text(T value) {
    if constexpr (std::is_floating_point_v<T>) {
      out_ += io::format_double(static_cast<double>(value));
    } else {
      out_ += std::to_string(value);
    }
  }

  template <class T>
  void number(T value, const std::string& path) {
    if constexpr (std::is_floating_point_v<T>)
      require(std::isfinite(value), code_, path + ": not a finite number (JSON cannot hold it)");
    scalar_text(value);
  }

  void string(const flatbuffers::String* s, const std::string& path) {
    require(s != nullptr, ErrorCode::kInternal, path + ": missing string");
    const std::string_view text(s->c_str(), s->size());
    size_t bad = 0;
    if (!io::valid_utf8(text, &bad)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
      fail(code_, path + ": not valid UTF-8 (byte " + hex + " at offset " + std::to_string(bad) + ")");
    }
    out_ += io::quote_json(text);
  }

  void field(const flatbuffers::Type& type, const flatbuffers::Table* t, flatbuffers::voffset_t offset,
             const std::string& path, int depth) {
    using namespace flatbuffers;
    switch (type.base_type) {
      case BASE_TYPE_BOOL: out_ += t->GetField<uint8_t>(offset, 0) ? "true" : "false"; return;
      case BASE_TYPE_CHAR: return number(static_cast<int>(t->GetField<int8_t>(offset, 0)), path);
      case BASE_TYPE_UCHAR: return number(static_cast<unsigned>(t->GetField<uint8_t>(offset, 0)), path);
      case BASE_TYPE_SHORT: return number(t->GetField<int16_t>(offset, 0), path);
      case BASE_TYPE_USHORT: return number(t->GetField<uint16_t>(offset, 0), path);
      case BASE_TYPE_INT: return number(t->GetField<int32_t>(offset, 0), path);
      case BASE_TYPE_UINT: return number(t->GetField<uint32_t>(offset, 0), path);
      case BASE_TYPE_LONG: return number(t->GetField<int64_t>(offset, 0), path);
      case BASE_TYPE_ULONG: return number(t->GetField<uint64_t>(offset, 0), path);
      case BASE_TYPE_FLOAT: return number(t->GetField<float>(offset, 0), path);
      case BASE_TYPE_DOUBLE: return number(t->GetField<double>(offset, 0), path);
      case BASE_TYPE_STRING: return string(t->GetPointer<const String*>(offset), path);
      case BASE_TYPE_STRUCT:
        return table(*type.struct_def, t->GetPointer<const Table*>(offset), path, depth);
      case BASE_TYPE_VECTOR: return vector(type.VectorType(), t->GetPointer<const uint8_t*>(offset), path, depth);
      default: fail(ErrorCode::kInternal, path + ": unsupported field type in the schema");
    }
  }

  template <class T>
  void scalars(const uint8_t* vec, const std::string& path, int depth) {
    const auto* v = reinterpret_cast<const flatbuffers::Vector<T>*>(vec);
    open_array(v->size());
    for (flatbuffers::uoffset_t i = 0; i < v->size(); ++i) {
      element(i, depth);
      if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>)
        number(static_cast<int>(v->Get(i)), path + "[" + std::to_string(i) + "]");
      else
        number(v->Get(i), path + "[" + std::to_string(i) + "]");
    }
    close_array(v->size(), depth);
  }
  void open_array(size_t) { out_ += "["; }
  void element(size_t i, int depth) {
    out_ += i ? "," : "";
    newline(depth + 1);
  }
  void close_array(size_t n, int depth) {
    if (n) newline(depth);
    out_ += "]";
  }

  void vector(const flatbuffers::Type& element_type, const uint8_t* vec, const std::string& path, int depth) {
    using namespace flatbuffers;
    switch (element_type.base_type) {
      case BASE_TYPE_BOOL: {
        const auto* v = reinterpret_cast<const Vector<uint8_t>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i) element(i, depth), out_ += v->Get(i) ? "true" : "false";
        return close_array(v->size(), depth);
      }
      case BASE_TYPE_CHAR: return scalars<int8_t>(vec, path, depth);
      case BASE_TYPE_UCHAR: return scalars<uint8_t>(vec, path, depth);
      case BASE_TYPE_SHORT: return scalars<int16_t>(vec, path, depth);
      case BASE_TYPE_USHORT: return scalars<uint16_t>(vec, path, depth);
      case BASE_TYPE_INT: return scalars<int32_t>(vec, path, depth);
      case BASE_TYPE_UINT: return scalars<uint32_t>(vec, path, depth);
      case BASE_TYPE_LONG: return scalars<int64_t>(vec, path, depth);
      case BASE_TYPE_ULONG: return scalars<uint64_t>(vec, path, depth);
      case BASE_TYPE_FLOAT: return scalars<float>(vec, path, depth);
      case BASE_TYPE_DOUBLE: return scalars<double>(vec, path, depth);
      case BASE_TYPE_STRING: {
        const auto* v = reinterpret_cast<const Vector<Offset<String>>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i) element(i, depth), string(v->Get(i), path + "[" + std::to_string(i) + "]");
        return close_array(v->size(), depth);
      }
      case BASE_TYPE_STRUCT: {
        const auto* v = reinterpret_cast<const Vector<Offset<Table>>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i)
          element(i, depth), table(*element_type.struct_def, v->Get(i), path + "[" + std::to_string(i) + "]", depth + 1);
        return close_array(v->size(), depth);
      }
      default: fail(ErrorCode::kInternal, path + ": unsupported vector type in the schema");
    }
  }

  ErrorCode code_;
  std::string out_;
};

// One parsed copy of the schema for reading its table definitions (never mutated after the
// first call, so it may be shared between threads).
const flatbuffers::StructDef& schema_table(const char* root_type) {
  static const std::unique_ptr<flatbuffers::Parser> schema = make_parser("TransformerConfig");
  const auto* def = schema->structs_.Lookup(std::string("olm.fb.") + root_type);
  require(def != nullptr, ErrorCode::kInternal, std::string("schema/olm.fbs has no table ") + root_type);
  return *def;
}

}  // namespace

const std::vector<AttentionConfigField>& attention_config_fields() {
  static const std::vector<AttentionConfigField> fields = [] {
    std::vector<AttentionConfigField> out;
    for (const auto* f : schema_table("AttentionConfig").fields.vec) {
      const std::string where = "schema/olm.fbs: AttentionConfig." + f->name;
      const auto* attribute = f->attributes.Lookup("sequence_mixer");
      require(attribute != nullptr, ErrorCode::kInternal,
              where + " has no (sequence_mixer: \"attention\" | \"gated_delta_net\" | \"any\") attribute");
      const std::string& value = attribute->constant;
      AttentionConfigField field;
      field.name = f->name;
      field.accepted_by = value == "attention"         ? SequenceMixer::kAttention
                          : value == "gated_delta_net" ? SequenceMixer::kGatedDeltaNet
                                                       : SequenceMixer::kAny;
      require(value == "attention" || value == "gated_delta_net" || value == "any", ErrorCode::kInternal,
              where + ": unknown sequence_mixer '" + value + "' (known: attention, gated_delta_net, any)");
      field.vtable_offset = f->value.offset;
      out.push_back(std::move(field));
    }
    return out;
  }();
  return fields;
}

std::vector<uint8_t> json_to_flatbuffer(std::string_view text, const char* root_type,
                                        const std::string& what) {
  require(text.find('\0') == std::string_view::npos, ErrorCode::kParse, what + ": contains a NUL byte");
  // Our reader first: it knows JSON's kinds and positions, so every problem it finds names
  // the line, the field's path and what was expected. (Standard JSON only: no comments.)
  const io::Json doc = io::parse_json(text.data(), text.size(), what, 64);
  require(doc.kind == io::Json::kObject, ErrorCode::kParse,
          what + ": expected a JSON object ({...}) at the top level, not " + describe(doc));
  auto parser = make_parser(root_type);
  JsonSchemaChecker(text, what, root_description(root_type)).table(*parser->root_struct_def_, doc, "");
  const std::string source(text);  // the parser wants NUL-terminated text
  if (!parser->ParseJson(source.c_str()))
    fail(ErrorCode::kParse, what + ": " + with_field_name(source, parser->error_));
  const uint8_t* buf = parser->builder_.GetBufferPointer();
  return {buf, buf + parser->builder_.GetSize()};
}

std::string flatbuffer_to_json(const uint8_t* buffer, const char* root_type) {
  return JsonWriter(ErrorCode::kInternal)
      .document(schema_table(root_type), flatbuffers::GetRoot<flatbuffers::Table>(buffer), "");
}

void check_json_writable(const uint8_t* buffer, const char* root_type) {
  JsonWriter(ErrorCode::kInvalidConfig)
      .document(schema_table(root_type), flatbuffers::GetRoot<flatbuffers::Table>(buffer), "");
}

ModelSpec resolve(const fb::TransformerConfigT& in) {
  ModelSpec spec;
  spec.d_model = in.d_model;
  spec.vocab_size = in.vocab_size;
  spec.n_layers = in.n_layers;
  require_positive(spec.d_model, "d_model");
  require_positive(spec.vocab_size, "vocab_size");
  require_positive(spec.n_layers, "n_layers");
  const std::string model_name = or_default(in.name, "default");
  require_one_of(model_name, {"default", "normalized", "moe"}, "name");
  spec.normalized = model_name == "normalized";
  spec.moe = model_name == "moe";
  require(in.lm_head != nullptr, ErrorCode::kInvalidConfig, "lm_head: required field is missing");
  // n_layers is validated positive above; cap it so the per-layer vector stays sane before
  // the parameter-count check below gets to run.
  require(spec.n_layers <= 100000, ErrorCode::kInvalidConfig,
          "n_layers (" + std::to_string(spec.n_layers) + ") is larger than 100000");
  const auto per_layer = block_configs_per_layer(in);
  // Blocks no layer uses (`block` when every layer is overridden, named blocks the pattern
  // never picks) are checked by the same rules: an accepted config has no invalid part.
  {
    std::vector<std::pair<const fb::TransformerBlockConfigT*, std::string>> all;
    if (in.block) all.emplace_back(in.block.get(), "block");
    for (size_t k = 0; k < in.block_overrides.size(); ++k)
      all.emplace_back(in.block_overrides[k]->block.get(), "block_overrides[" + std::to_string(k) + "].block");
    for (const auto& nb : in.named_blocks) all.emplace_back(nb->block.get(), "named_blocks[" + nb->name + "]");
    for (const auto& [config, field] : all) {
      const bool used = std::any_of(per_layer.begin(), per_layer.end(), [&](const auto& p) { return p.first == config; });
      if (used) continue;
      resolve_block(*config, spec.d_model, spec.n_layers, field);
      if (const auto* sw = config->attention->sliding_window.get())
        window_for_layer(*sw, 0, spec.n_layers, field + ".attention.sliding_window");
    }
  }
  for (const auto& [config, field] : per_layer) {
    const int64_t i = static_cast<int64_t>(spec.blocks.size());
    BlockSpec b = resolve_block(*config, spec.d_model, spec.n_layers, field);
    // OLMo-core's MoETransformer also runs dense blocks; MoE blocks need it (it reports their
    // losses and updates their routers after each batch).
    require(!b.moe || spec.moe, ErrorCode::kInvalidConfig,
            "name: " + field + ".name '" + b.name + "' needs the MoE transformer (name \"moe\")");
    // nGPT is all or nothing: the normalized transformer runs normalized blocks only.
    require((b.name == "normalized") == spec.normalized, ErrorCode::kInvalidConfig,
            spec.normalized ? "name: the normalized transformer needs normalized blocks (layer " + std::to_string(i) +
                                  " is '" + b.name + "')"
                            : field + ".name: normalized blocks need the normalized transformer (name: \"normalized\")");
    if (const auto* sw = config->attention->sliding_window.get()) {
      const int64_t window = window_for_layer(*sw, i, spec.n_layers, field + ".attention.sliding_window");
      if (window != -1) {
        b.attention.window_size = window;
      } else if (config->attention->rope && config->attention->rope->no_global_rope) {
        b.attention.rope.reset();  // OLMo-core: global (full-attention) layers drop RoPE
      }
    }
    spec.blocks.push_back(std::move(b));
  }

  const std::string head_name = or_default(in.lm_head->name, "default");
  require_one_of(head_name, {"default", "normalized"}, "lm_head.name");
  spec.lm_head.normalized = head_name == "normalized";
  if (spec.normalized) {
    require(!in.embedding_norm && !in.embed_scale.has_value(), ErrorCode::kInvalidConfig,
            "embedding_norm and embed_scale are not supported by the normalized transformer");
    require(spec.lm_head.normalized, ErrorCode::kInvalidConfig,
            "lm_head.name: the normalized transformer needs the normalized head");
  }
  require(!spec.lm_head.normalized || !in.lm_head->layer_norm, ErrorCode::kInvalidConfig,
          "lm_head.layer_norm: the normalized head has no final norm");
  if (in.lm_head->layer_norm)
    spec.lm_head.layer_norm = resolve_layer_norm(*in.lm_head->layer_norm, "lm_head.layer_norm");
  spec.lm_head.bias = in.lm_head->bias.has_value() ? *in.lm_head->bias : !spec.lm_head.normalized;
  spec.lm_head.loss_implementation = or_default(in.lm_head->loss_implementation, "default");
  require_one_of(spec.lm_head.loss_implementation, {"default", "fused_linear"}, "lm_head.loss_implementation");

  const std::string dtype = or_default(in.dtype, "float32");
  require_one_of(dtype, {"float32", "bfloat16"}, "dtype");
  spec.dtype = dtype == "bfloat16" ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  spec.init_method = or_default(in.init_method, "normal");
  require_one_of(spec.init_method, {"normal", "llama", "llama_depth", "fan_in", "normalized"}, "init_method");
  for (const auto& b : spec.blocks)
    require(!(b.gated_delta_net && spec.init_method == "fan_in"), ErrorCode::kInvalidConfig,
            "init_method: \"fan_in\" is not supported with GatedDeltaNet blocks (as in OLMo-core)");
  spec.init_seed = in.init_seed;
  // Standard deviations above kMaxInitStd are no initialization anyone trains from (OLMo-core
  // uses 0.02; embeddings at most 1), and far larger ones overflow to a model of NaNs.
  constexpr double kMaxInitStd = 10;
  spec.init_std = in.init_std;
  require_positive_finite(spec.init_std, "init_std");
  require(spec.init_std <= kMaxInitStd, ErrorCode::kInvalidConfig,
          "init_std must be at most 10 (got " + io::format_double(spec.init_std) + ")");
  spec.embedding_init_std =
      in.embedding_init_std.has_value() ? *in.embedding_init_std : spec.init_std;
  require_positive_finite(spec.embedding_init_std, "embedding_init_std");
  require(spec.embedding_init_std <= kMaxInitStd, ErrorCode::kInvalidConfig,
          "embedding_init_std must be at most 10 (got " + io::format_double(spec.embedding_init_std) + ")");
  if (in.embedding_norm) spec.embedding_norm = resolve_layer_norm(*in.embedding_norm, "embedding_norm");
  for (size_t k = 0; k < in.freeze_params.size(); ++k)
    require(!in.freeze_params[k].empty(), ErrorCode::kInvalidConfig,
            "freeze_params[" + std::to_string(k) + "]: empty pattern");
  spec.freeze_params = in.freeze_params;
  if (in.embed_scale.has_value()) {
    require_positive_finite(*in.embed_scale, "embed_scale");
    spec.embed_scale = *in.embed_scale;
  }
  if (const auto* pe = in.position_embedding.get()) {
    PositionEmbeddingSpec p;
    p.name = pe->name;
    require_one_of(p.name, {"learned", "sinusoidal"}, "position_embedding.name");
    if (pe->max_sequence_length.has_value()) {
      require_positive(*pe->max_sequence_length, "position_embedding.max_sequence_length");
      p.max_sequence_length = *pe->max_sequence_length;
    }
    require(p.name != "learned" || p.max_sequence_length > 0, ErrorCode::kInvalidConfig,
            "position_embedding.max_sequence_length is required for learned position embeddings");
    spec.position_embedding = p;
  }
  spec.tie_word_embeddings = in.tie_word_embeddings;
  require(!spec.tie_word_embeddings || !spec.normalized, ErrorCode::kInvalidConfig,
          "tie_word_embeddings is not supported by the normalized transformer (as OLMo-core)");
  require(!spec.tie_word_embeddings || !spec.lm_head.bias, ErrorCode::kInvalidConfig,
          "tie_word_embeddings requires lm_head.bias false (OLMo-core cannot tie an LM head with a bias)");

  // Parameter counts must fit in int64 with room to spare: reject absurd shapes here rather
  // than overflow later. (Whether they fit in this machine's memory is checked when a model
  // is created.) Each factor is < 2^31, so every product of two is exact in long double.
  long double total = static_cast<long double>(spec.d_model) * spec.vocab_size * 2;
  for (const auto& b : spec.blocks) {
    const auto& a = b.attention;
    total += static_cast<long double>(spec.d_model) * a.head_dim * (2 * a.n_heads + 2 * a.n_kv_heads) +
             3.0L * spec.d_model * b.feed_forward.hidden_size +
             (b.gated_delta_net ? 3.0L * spec.d_model * b.gated_delta_net->value_dim() : 0.0L) +
             (b.moe ? 3.0L * spec.d_model * b.moe->hidden_size * b.moe->num_experts +
                          static_cast<long double>(spec.d_model) * b.moe->num_experts +
                          (b.moe->shared_mlp ? 3.0L * spec.d_model * b.moe->shared_mlp->hidden_size : 0.0L)
                    : 0.0L);
  }
  if (spec.position_embedding)
    total += static_cast<long double>(spec.position_embedding->max_sequence_length) * spec.d_model;
  require(total < 1e15L, ErrorCode::kInvalidConfig,
          "the configuration has more than 1e15 parameters (d_model, vocab_size, n_layers, "
          "n_heads, head_dim or hidden_size is absurdly large)");
  return spec;
}

Config Config::from_native(const fb::TransformerConfigT& native) {
  // The one validation, whatever door the config came in by (JSON, FlatBuffer, native, a
  // preset or a train config's `model`): the rules of resolve(), and what JSON can hold.
  // What JSON can hold is checked first, so later messages quote only valid UTF-8.
  Config config;
  config.native_ = std::make_shared<const fb::TransformerConfigT>(native);
  check_json_writable(config.to_flatbuffer().data(), "TransformerConfig");
  config.spec_ = std::make_shared<const ModelSpec>(resolve(native));
  return config;
}

std::string read_text_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
  std::string text;
  char chunk[65536];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) {
    text.append(chunk, n);
    if (text.size() > (size_t{1} << 30)) {
      std::fclose(f);
      fail(ErrorCode::kIo, path + ": larger than 1 GiB; not a config");
    }
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  require(!failed, ErrorCode::kIo, path + ": read error");
  return text;
}

Config Config::from_json_file(const std::string& path) { return from_json(read_text_file(path), path); }

Config Config::from_flatbuffer(const void* data, size_t size) {
  require(data != nullptr || size == 0, ErrorCode::kInvalidArgument, "data: NULL");
  const auto* bytes = static_cast<const uint8_t*>(data);
  require(size >= 8, ErrorCode::kParse,
          "config FlatBuffer: " + std::to_string(size) + " bytes is too short to be a buffer");
  require(size < (1ull << 31), ErrorCode::kParse, "config FlatBuffer: larger than 2 GiB");
  require(fb::TransformerConfigBufferHasIdentifier(bytes), ErrorCode::kParse,
          "config FlatBuffer: wrong file identifier (expected \"OLMC\")");
  // Verify an aligned copy: the verifier checks alignment of scalars against the base.
  std::vector<uint8_t> aligned(bytes, bytes + size);
  flatbuffers::Verifier verifier(aligned.data(), aligned.size(), /*max_depth=*/64,
                                 /*max_tables=*/100000);
  require(fb::VerifyTransformerConfigBuffer(verifier), ErrorCode::kParse,
          "config FlatBuffer: verification failed (truncated or corrupt buffer)");
  fb::TransformerConfigT native;
  fb::GetTransformerConfig(aligned.data())->UnPackTo(&native);
  return from_native(native);
}

Config Config::from_json(std::string_view text, const std::string& source) {
  const auto buffer = json_to_flatbuffer(text, "TransformerConfig", source.empty() ? "config JSON" : source);
  return from_flatbuffer(buffer.data(), buffer.size());
}

std::vector<uint8_t> Config::to_flatbuffer() const {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::TransformerConfig::Pack(builder, native_.get()),
                 fb::TransformerConfigIdentifier());
  return {builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize()};
}

std::string Config::to_json() const {
  return flatbuffer_to_json(to_flatbuffer().data(), "TransformerConfig");
}

ParamCounts Config::num_params() const {
  const ModelSpec& s = *spec_;
  ParamCounts counts;
  counts.total = s.d_model * s.vocab_size;
  if (s.embedding_norm) counts.total += s.embedding_norm->num_params(s.d_model);
  // Learned position embeddings are embedding parameters (Kaplan et al. leave them out of
  // the non-embedding count too).
  const int64_t positions =
      s.position_embedding && s.position_embedding->name == "learned" ? s.position_embedding->max_sequence_length * s.d_model : 0;
  counts.total += positions;
  for (const auto& block : s.blocks) counts.total += block.num_params(s.d_model);
  counts.total += s.lm_head.num_params(s.d_model, s.vocab_size);
  // OLMo-core: the LM head weight is shared with the embeddings when tied, counted once.
  if (s.tie_word_embeddings) counts.total -= s.d_model * s.vocab_size;
  counts.non_embedding = counts.total - s.d_model * s.vocab_size - positions;
  counts.active = counts.total;
  for (const auto& block : s.blocks) counts.active -= block.num_params(s.d_model) - block.num_active_params(s.d_model);
  counts.active_non_embedding = counts.active - s.d_model * s.vocab_size - positions;
  return counts;
}

}  // namespace olm
