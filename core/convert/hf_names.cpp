#include "core/convert/hf_names.h"

#include <regex>
#include <utility>

#include "core/error.h"

namespace olm::convert {
namespace {

// (OLMo-core suffix after "blocks.<i>.", HF suffix after "model.layers.<i>.") for one block
// type: the norms are where block types differ.
std::vector<std::pair<std::string, std::string>> block_table(const std::string& block_name) {
  std::vector<std::pair<std::string, std::string>> t = {
      {"attention.w_q.weight", "self_attn.q_proj.weight"},
      {"attention.w_k.weight", "self_attn.k_proj.weight"},
      {"attention.w_v.weight", "self_attn.v_proj.weight"},
      {"attention.w_out.weight", "self_attn.o_proj.weight"},
      {"attention.q_norm.weight", "self_attn.q_norm.weight"},
      {"attention.k_norm.weight", "self_attn.k_norm.weight"},
      {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
      {"feed_forward.w2.weight", "mlp.down_proj.weight"},
      {"feed_forward.w3.weight", "mlp.up_proj.weight"},
      {"feed_forward_moe.router.weight", "mlp.gate.weight"},
  };
  if (block_name == "reordered_norm" || block_name == "moe_reordered_norm") {
    t.push_back({"attention_norm.weight", "post_attention_layernorm.weight"});
    t.push_back({"feed_forward_norm.weight", "post_feedforward_layernorm.weight"});
  } else if (block_name == "peri_norm") {
    t.push_back({"attention_norm.weight", "input_layernorm.weight"});
    t.push_back({"post_attention_norm.weight", "post_attention_layernorm.weight"});
    t.push_back({"feed_forward_norm.weight", "pre_feedforward_layernorm.weight"});
    t.push_back({"post_feed_forward_norm.weight", "post_feedforward_layernorm.weight"});
  } else {
    t.push_back({"attention_norm.weight", "input_layernorm.weight"});
    t.push_back({"feed_forward_norm.weight", "post_attention_layernorm.weight"});
  }
  return t;
}

const std::vector<std::pair<std::string, std::string>> kTopLevel = {
    {"embeddings.weight", "model.embed_tokens.weight"},
    {"lm_head.norm.weight", "model.norm.weight"},
    {"lm_head.w_out.weight", "lm_head.weight"},
};

const std::regex& block_regex() {
  static const std::regex r("^blocks\\.([0-9]+)\\.(.*)$");
  return r;
}

std::string block_name_of(const ModelSpec& spec, size_t layer) {
  return layer < spec.blocks.size() ? spec.blocks[layer].name : std::string();
}

}  // namespace

std::string to_hf_name(const std::string& name, const ModelSpec& spec) {
  for (const auto& [ours, hf] : kTopLevel)
    if (name == ours) return hf;
  std::smatch m;
  if (std::regex_match(name, m, block_regex()))
    for (const auto& [ours, hf] : block_table(block_name_of(spec, std::stoul(m[1].str()))))
      if (m[2] == ours) return "model.layers." + m[1].str() + "." + hf;
  fail(ErrorCode::kInvalidArgument, "parameter '" + name + "' has no Hugging Face name");
}

std::string from_hf_name(const std::string& hf_name, const ModelSpec& spec) {
  for (const auto& [ours, hf] : kTopLevel)
    if (hf_name == hf) return ours;
  static const std::regex block("^model\\.layers\\.([0-9]+)\\.(.*)$");
  std::smatch m;
  if (std::regex_match(hf_name, m, block))
    for (const auto& [ours, hf] : block_table(block_name_of(spec, std::stoul(m[1].str()))))
      if (m[2] == hf) return "blocks." + m[1].str() + "." + ours;
  fail(ErrorCode::kMismatch, "tensor '" + hf_name + "' is not a Hugging Face Llama/OLMo-2 parameter");
}

std::vector<HfTensorPlan> hf_tensor_plan(const ModelSpec& spec, HfArchitecture architecture,
                                         const std::vector<ParameterInfo>& parameters, double query_scale) {
  const bool gemma = architecture == HfArchitecture::kGemma3;
  std::vector<HfTensorPlan> plans;
  for (const auto& p : parameters) {
    HfTensorPlan plan;
    plan.olm_name = p.name;
    plan.olm_view = p.shape;
    const bool is_norm = p.name.find("norm.weight") != std::string::npos;
    if (gemma && is_norm) plan.offset = 1.0;
    std::smatch m;
    const bool in_block = std::regex_match(p.name, m, block_regex());
    const std::string layer = in_block ? m[1].str() : "";
    const std::string suffix = in_block ? m[2].str() : "";
    if (suffix == "attention.q_norm.weight") plan.scale = query_scale;
    const std::string hf_prefix = "model.layers." + layer + ".";
    if (in_block && (suffix == "feed_forward_moe.experts.mlp.w1" || suffix == "feed_forward_moe.experts.mlp.w2" ||
                     suffix == "feed_forward_moe.experts.mlp.w3")) {
      const MoESpec& moe = *spec.blocks.at(std::stoul(layer)).moe;
      require(moe.dropless, ErrorCode::kInvalidArgument,
              "parameter '" + p.name + "': capacity-limited experts have no Hugging Face layout");
      const int64_t e_count = moe.num_experts, h = moe.hidden_size, d = spec.d_model;
      const char w = suffix.back();
      const std::string proj = w == '1' ? "gate_proj" : w == '2' ? "down_proj" : "up_proj";
      plan.olm_view = {e_count * h, d};
      for (int64_t e = 0; e < e_count; ++e) {
        HfPiece piece;
        piece.hf_name = hf_prefix + "mlp.experts." + std::to_string(e) + "." + proj + ".weight";
        piece.row_offset = e * h;
        piece.transposed = w == '2';  // olm keeps w2 as (hidden, d_model) rows, HF's down_proj is (d_model, hidden)
        piece.hf_shape = piece.transposed ? std::vector<int64_t>{d, h} : std::vector<int64_t>{h, d};
        plan.pieces.push_back(piece);
      }
      plans.push_back(std::move(plan));
      continue;
    }
    HfPiece piece;
    piece.hf_shape = p.shape;
    if (in_block && suffix == "feed_forward_moe.router.weight") {
      const int64_t e_count = spec.blocks.at(std::stoul(layer)).moe->num_experts;
      plan.olm_view = {e_count, spec.d_model};
      piece.hf_shape = plan.olm_view;
    }
    piece.hf_name = to_hf_name(p.name, spec);
    plan.pieces.push_back(piece);
    plans.push_back(std::move(plan));
  }
  return plans;
}

}  // namespace olm::convert
