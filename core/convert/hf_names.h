// (core/convert: above config, whose ModelSpec decides the names.)
// Parameter names between OLMo-core (olm's own) and Hugging Face's Llama / OLMo-2 layouts.
#pragma once
#include <string>

#include "core/config/config.h"

namespace olm::convert {

// "blocks.3.attention.w_q.weight" -> "model.layers.3.self_attn.q_proj.weight". The block type
// decides which HF norm the block's two norms are (OLMo-2's reordered norms are post-norms).
// Throws kInvalidArgument for a name with no HF counterpart.
std::string to_hf_name(const std::string& name, const ModelSpec& spec);
std::string from_hf_name(const std::string& hf_name, const ModelSpec& spec);

}  // namespace olm::convert
