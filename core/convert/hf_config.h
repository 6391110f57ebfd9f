// Hugging Face config.json <-> olm model config, for the causal-LM architectures olm computes
// exactly as transformers does. Import refuses, naming the field, every config.json field that
// would change the model and that olm cannot express; fields that do not change the forward
// pass (use_cache, token ids, initializer_range, ...) are accepted and not kept.
#pragma once
#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/config/config.h"

namespace olm::convert {

enum class HfArchitecture { kLlama, kOlmo2, kOlmo3, kQwen3, kOlmoe, kQwen3Moe, kGemma3 };

// "LlamaForCausalLM", ... (config.json's architectures[0]).
const char* hf_architecture_name(HfArchitecture architecture);
// "llama", ... (config.json's model_type).
const char* hf_model_type(HfArchitecture architecture);

struct HfModelConfig {
  Config config;
  HfArchitecture architecture = HfArchitecture::kLlama;
  // Token ids from config.json, written back into generation_config.json on export.
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  // Gemma3's query_pre_attn_scalar: scores scale by query_pre_attn_scalar^-1/2, olm's by
  // head_dim^-1/2, so the query norm's weights are multiplied by sqrt(head_dim /
  // query_pre_attn_scalar) on import (1: nothing to fold).
  double query_scale = 1.0;
};

// Parses a config.json text. The olm model dtype is `dtype` when given, else config.json's
// torch_dtype (float16 checkpoints become float32 models, which hold every float16 value
// exactly; olm has no float16 models). `source` names the file in messages. Throws kParse for
// malformed JSON or a field of the wrong kind, kInvalidConfig naming the field olm cannot
// express (an unknown architecture, attention_bias, a rope_scaling olm does not compute as
// transformers does, ...).
HfModelConfig config_from_hf(std::string_view text, const std::string& source,
                             std::optional<c10::ScalarType> dtype = std::nullopt);

// The architecture an olm config is in Hugging Face's terms; throws kInvalidConfig naming the
// first feature no supported transformers class has (nGPT, biases, a LayerNorm, ...).
HfArchitecture hf_architecture_of(const ModelSpec& spec);

struct HfConfigExport {
  c10::ScalarType dtype = c10::ScalarType::Float;  // config.json's torch_dtype
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  // Gemma3's query_pre_attn_scalar: scores scale by query_pre_attn_scalar^-1/2, olm's by
  // head_dim^-1/2, so the query norm's weights are multiplied by sqrt(head_dim /
  // query_pre_attn_scalar) on import (1: nothing to fold).
  double query_scale = 1.0;
};

// config.json text for an olm config (validated with hf_architecture_of).
std::string hf_config_json(const Config& config, const HfConfigExport& options);

}  // namespace olm::convert
