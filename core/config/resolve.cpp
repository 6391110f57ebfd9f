// resolve(): the native model config into the ModelSpec the model is built from, every
// default filled in and every rule checked.
#include "core/config/internal.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/io/json.h"

namespace olm {

using namespace config_internal;

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
    for (const auto& entry : all) {
      // Not a structured binding: C++17 lambdas cannot capture one (clang refuses).
      const auto* config = entry.first;
      const std::string& field = entry.second;
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

}  // namespace olm
