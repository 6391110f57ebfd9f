// (core/convert: above config and model, whose ModelSpec and parameters decide the names.)
// Parameter names and layouts between OLMo-core (olm's own) and Hugging Face's causal-LM
// classes (Llama, OLMo-2/3, Qwen3, OLMoE, Qwen3-MoE, Gemma3).
#pragma once
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/convert/hf_config.h"
#include "core/model.h"

namespace olm::convert {

// "blocks.3.attention.w_q.weight" -> "model.layers.3.self_attn.q_proj.weight". The block type
// decides which HF norm the block's two norms are (OLMo-2's reordered norms are post-norms).
// Throws kInvalidArgument for a name with no one-to-one HF counterpart (MoE experts, which
// HF stores one tensor per expert: see hf_tensor_plan).
std::string to_hf_name(const std::string& name, const ModelSpec& spec);
std::string from_hf_name(const std::string& hf_name, const ModelSpec& spec);

// One Hugging Face tensor that fills rows [row_offset, row_offset + rows) of an olm parameter
// viewed as `olm_view` (2-D for stacked experts and the flattened router, else the parameter's
// own shape); `transposed`: the HF tensor is the transpose of those rows.
struct HfPiece {
  std::string hf_name;
  std::vector<int64_t> hf_shape;
  int64_t row_offset = 0;
  bool transposed = false;
};

struct HfTensorPlan {
  std::string olm_name;
  std::vector<int64_t> olm_view;
  std::vector<HfPiece> pieces;
  // olm value = (HF value + offset) * scale: Gemma3's norms compute x * (1 + w), olm's x * w;
  // scale folds Gemma3's query_pre_attn_scalar into its query norm (HfModelConfig::query_scale).
  double offset = 0.0;
  double scale = 1.0;
};

// How every parameter of a model with these parameters maps to HF tensors (tied embeddings:
// no lm_head.weight). Throws kInvalidArgument naming a parameter HF has no place for.
std::vector<HfTensorPlan> hf_tensor_plan(const ModelSpec& spec, HfArchitecture architecture,
                                         const std::vector<ParameterInfo>& parameters, double query_scale = 1.0);

}  // namespace olm::convert
