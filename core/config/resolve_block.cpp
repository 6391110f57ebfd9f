// A transformer block (its sequence mixer, feed-forward or MoE, norms, residuals) and the
// choice of block per layer (block, block_overrides, named_blocks and block_pattern).
#include "core/config/internal.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm {
namespace config_internal {

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

}  // namespace config_internal

}  // namespace olm
