// core/config's private interface: the resolution steps that turn the native config
// (fb::TransformerConfigT) into a ModelSpec, split by concern over several files, and the
// helpers they share. Not installed, not used outside core/config.
//   schema_json.cpp          JSON <-> FlatBuffer through the embedded schema
//   resolve.cpp              the model: blocks per layer, LM head, embeddings, limits
//   resolve_block.cpp        a transformer block and the per-layer block choice
//   resolve_attention.cpp    attention, RoPE, sliding windows
//   sequence_mixer.cpp       which mixer takes which AttentionConfig field; GatedDeltaNet
//   resolve_layers.cpp       the shared validators; layer norm, feed-forward, MoE
//   config.cpp               the Config doors
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/config/config.h"

namespace flatbuffers {
struct StructDef;
}

namespace olm::config_internal {

// ---- schema_json.cpp
// A table of the embedded schema (parsed once; safe to share between threads).
const flatbuffers::StructDef& schema_table(const char* root_type);

// ---- resolve_layers.cpp: validators whose messages name the field path.
std::string join(const std::vector<std::string>& names);
void require_one_of(const std::string& value, const std::vector<std::string>& known, const std::string& field);
std::string or_default(const std::string& value, const char* fallback);
void require_positive(int64_t value, const std::string& field);
void require_positive_finite(double value, const std::string& field);
void require_probability(double value, const std::string& field);

LayerNormSpec resolve_layer_norm(const fb::LayerNormConfigT& in, const std::string& field);
FeedForwardSpec resolve_feed_forward(const fb::FeedForwardConfigT& in, int64_t d_model, const std::string& field);
MoESpec resolve_moe(const fb::MoEConfigT& in, int64_t d_model, int64_t n_layers, const std::string& field);

// ---- resolve_attention.cpp
int64_t resolve_head_dim(std::optional<int32_t> head_dim, int64_t d_model, int64_t n_heads, const std::string& field);
AttentionSpec resolve_attention(const fb::AttentionConfigT& in, int64_t d_model, const std::string& field);
int64_t window_for_layer(const fb::SlidingWindowAttentionConfigT& sw, int64_t layer, int64_t n_layers,
                         const std::string& field);

// ---- sequence_mixer.cpp
const AttentionConfigField* first_field_refused(const fb::AttentionConfigT& in, SequenceMixer mixer);
GatedDeltaNetSpec resolve_gated_delta_net(const fb::AttentionConfigT& in, int64_t d_model, const std::string& field);

// ---- resolve_block.cpp
BlockSpec resolve_block(const fb::TransformerBlockConfigT& block, int64_t d_model, int64_t n_layers,
                        const std::string& field);
std::vector<std::pair<const fb::TransformerBlockConfigT*, std::string>> block_configs_per_layer(
    const fb::TransformerConfigT& in);

}  // namespace olm::config_internal
