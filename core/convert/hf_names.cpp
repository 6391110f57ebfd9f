#include "core/convert/hf_names.h"

#include <regex>
#include <utility>
#include <vector>

#include "core/error.h"

namespace olm::convert {
namespace {

// (OLMo-core suffix after "blocks.<i>.", HF suffix after "model.layers.<i>.")
std::vector<std::pair<std::string, std::string>> block_table(bool reordered) {
  return {
      {"attention.w_q.weight", "self_attn.q_proj.weight"},
      {"attention.w_k.weight", "self_attn.k_proj.weight"},
      {"attention.w_v.weight", "self_attn.v_proj.weight"},
      {"attention.w_out.weight", "self_attn.o_proj.weight"},
      {"attention.q_norm.weight", "self_attn.q_norm.weight"},
      {"attention.k_norm.weight", "self_attn.k_norm.weight"},
      {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
      {"feed_forward.w2.weight", "mlp.down_proj.weight"},
      {"feed_forward.w3.weight", "mlp.up_proj.weight"},
      {"attention_norm.weight", reordered ? "post_attention_layernorm.weight" : "input_layernorm.weight"},
      {"feed_forward_norm.weight", reordered ? "post_feedforward_layernorm.weight" : "post_attention_layernorm.weight"},
  };
}

const std::vector<std::pair<std::string, std::string>> kTopLevel = {
    {"embeddings.weight", "model.embed_tokens.weight"},
    {"lm_head.norm.weight", "model.norm.weight"},
    {"lm_head.w_out.weight", "lm_head.weight"},
};

bool reordered(const ModelSpec& spec) { return !spec.blocks.empty() && spec.blocks[0].name == "reordered_norm"; }

}  // namespace

std::string to_hf_name(const std::string& name, const ModelSpec& spec) {
  for (const auto& [ours, hf] : kTopLevel)
    if (name == ours) return hf;
  static const std::regex block("^blocks\\.([0-9]+)\\.(.*)$");
  std::smatch m;
  if (std::regex_match(name, m, block))
    for (const auto& [ours, hf] : block_table(reordered(spec)))
      if (m[2] == ours) return "model.layers." + m[1].str() + "." + hf;
  fail(ErrorCode::kInvalidArgument, "parameter '" + name + "' has no Hugging Face name");
}

std::string from_hf_name(const std::string& hf_name, const ModelSpec& spec) {
  for (const auto& [ours, hf] : kTopLevel)
    if (hf_name == hf) return ours;
  static const std::regex block("^model\\.layers\\.([0-9]+)\\.(.*)$");
  std::smatch m;
  if (std::regex_match(hf_name, m, block))
    for (const auto& [ours, hf] : block_table(reordered(spec)))
      if (m[2] == hf) return "blocks." + m[1].str() + "." + ours;
  fail(ErrorCode::kMismatch, "tensor '" + hf_name + "' is not a Hugging Face Llama/OLMo-2 parameter");
}

}  // namespace olm::convert
