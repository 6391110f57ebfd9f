// core/convert/hf_config and hf_names: olm presets in Hugging Face terms and back, RoPE
// scalings through config.json, refusals naming the field or feature, and the tensor plan.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/config/config.h"
#include "core/convert/hf_config.h"
#include "core/convert/hf_names.h"
#include "core/error.h"
#include "test_util.h"

using ::testing::HasSubstr;

namespace {

using olm::ErrorCode;
using olm::testing::expect_error;
using olm::convert::HfArchitecture;

olm::convert::HfModelConfig round_trip(const olm::Config& config) {
  const std::string json = olm::convert::hf_config_json(config, {});
  return olm::convert::config_from_hf(json, "exported config.json");
}

// What transformers computes from: per-layer heads, windows, RoPE bases and scalings, norms.
void expect_same_model(const olm::ModelSpec& a, const olm::ModelSpec& b) {
  ASSERT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.d_model, b.d_model);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.embed_scale.has_value(), b.embed_scale.has_value());
  for (int64_t i = 0; i < a.n_layers; ++i) {
    const auto &x = a.blocks[i], &y = b.blocks[i];
    SCOPED_TRACE("layer " + std::to_string(i));
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.layer_norm.eps, y.layer_norm.eps);
    EXPECT_EQ(x.attention.n_heads, y.attention.n_heads);
    EXPECT_EQ(x.attention.n_kv_heads, y.attention.n_kv_heads);
    EXPECT_EQ(x.attention.head_dim, y.attention.head_dim);
    EXPECT_EQ(x.attention.window_size, y.attention.window_size);
    EXPECT_EQ(x.attention.rope->theta, y.attention.rope->theta);
    EXPECT_EQ(x.attention.qk_norm.has_value(), y.attention.qk_norm.has_value());
    EXPECT_EQ(x.attention.use_head_qk_norm, y.attention.use_head_qk_norm);
    ASSERT_EQ(x.attention.rope->scaling.has_value(), y.attention.rope->scaling.has_value());
    if (x.attention.rope->scaling) {
      const auto &s = *x.attention.rope->scaling, &t = *y.attention.rope->scaling;
      EXPECT_EQ(s.name, t.name);
      EXPECT_EQ(s.factor, t.factor);
      EXPECT_EQ(s.low_freq_proportion, t.low_freq_proportion);
      EXPECT_EQ(s.high_freq_proportion, t.high_freq_proportion);
      EXPECT_EQ(s.old_context_len, t.old_context_len);
      EXPECT_EQ(s.beta_fast, t.beta_fast);
      EXPECT_EQ(s.beta_slow, t.beta_slow);
    }
    EXPECT_EQ(x.feed_forward.hidden_size, y.feed_forward.hidden_size);
    EXPECT_EQ(x.feed_forward.activation, y.feed_forward.activation);
    EXPECT_EQ(x.moe.has_value(), y.moe.has_value());
  }
}

TEST(HfConfig, PresetsRoundTripThroughConfigJson) {
  const std::vector<std::pair<std::string, HfArchitecture>> presets = {
      {"llama3_1B", HfArchitecture::kLlama},   {"olmo2_30M", HfArchitecture::kOlmo2},
      {"olmo3_30M", HfArchitecture::kOlmo3},   {"qwen3_0_6B", HfArchitecture::kQwen3},
      {"gemma3_1B", HfArchitecture::kGemma3},
  };
  for (const auto& [name, arch] : presets) {
    SCOPED_TRACE(name);
    const auto config = olm::preset(name, 1024);
    EXPECT_EQ(olm::convert::hf_architecture_of(config.spec()), arch);
    const auto back = round_trip(config);
    EXPECT_EQ(back.architecture, arch);
    expect_same_model(config.spec(), back.config.spec());
  }
}

TEST(HfConfig, PresetsWithoutATransformersClassAreRefusedNamingTheFeature) {
  expect_error([] { olm::convert::hf_architecture_of(olm::preset("ngpt_271M", 256).spec()); },
               ErrorCode::kInvalidConfig, "nGPT");
  expect_error([] { olm::convert::hf_architecture_of(olm::preset("smallmoe", 256).spec()); },
               ErrorCode::kInvalidConfig, "moe_reordered_norm");
}

olm::Config llama_with_scaling(const std::string& scaling) {
  return olm::Config::from_json(R"({"d_model": 64, "vocab_size": 100, "n_layers": 2,
    "block": {"name": "default", "attention": {"n_heads": 4, "bias": false,
      "rope": {"theta": 10000, "scaling": )" + scaling + R"(}},
      "feed_forward": {"hidden_size": 128, "bias": false},
      "layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "qwen_rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

TEST(HfConfig, RopeScalingsRoundTrip) {
  for (const std::string scaling : {
           R"({"name": "pi", "factor": 4})",
           R"({"name": "stepwise", "factor": 8, "low_freq_proportion": 0, "high_freq_proportion": 0.25,
               "old_context_len": 64})",
           R"({"name": "dynamic_ntk", "factor": 2, "old_context_len": 32})",
           R"({"name": "yarn", "factor": 4, "old_context_len": 32})",
       }) {
    SCOPED_TRACE(scaling);
    const auto config = llama_with_scaling(scaling);
    expect_same_model(config.spec(), round_trip(config).config.spec());
  }
  // OLM's attention_rescale_factor has no transformers counterpart.
  expect_error([] { round_trip(llama_with_scaling(R"({"name": "pi", "factor": 4, "attention_rescale_factor": 2})")); },
               ErrorCode::kInvalidConfig, "attention_rescale_factor");
}

std::string llama_json(const std::string& extra) {
  return R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64)" +
         extra + "}";
}

TEST(HfConfig, FieldsOlmCannotComputeAsTransformersAreRefusedByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "beta_slow": 1, "original_max_position_embeddings": 100000})",
       "rope_scaling.beta_slow"},
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "truncate": false})", "rope_scaling.truncate"},
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4, "attention_factor": 1.5})", "rope_scaling.attention_factor"},
      {R"(, "rope_scaling": {"rope_type": "yarn", "factor": 0.5})", "rope_scaling.factor"},
      {R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4})",
       "rope_scaling.original_max_position_embeddings"},
      {R"(, "rope_scaling": {"rope_type": "linear", "factor": 2, "extra": 1})", "rope_scaling.extra"},
      {R"(, "pretraining_tp": 2)", "pretraining_tp"},
      {R"(, "hidden_act": "gelu_new")", "hidden_act"},
      {R"(, "partial_rotary_factor": 0.5)", "partial_rotary_factor"},
      {R"(, "num_key_value_heads": 3)", "num_key_value_heads"},
      {R"(, "is_encoder_decoder": true)", "is_encoder_decoder"},
      {R"(, "quantization_config": {"quant_method": "gptq"})", "quantization_config"},
  };
  for (const auto& [extra, field] : cases) {
    SCOPED_TRACE(extra);
    expect_error([&] { olm::convert::config_from_hf(llama_json(extra), "m/config.json"); }, ErrorCode::kInvalidConfig,
                 "m/config.json: field '" + field + "'");
  }
  expect_error([] { olm::convert::config_from_hf(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": )", "m/config.json"); },
               ErrorCode::kParse, "m/config.json");
  expect_error([] { olm::convert::config_from_hf(llama_json(R"(, "vocab_size": "many")"), "m/config.json"); },
               ErrorCode::kParse, "vocab_size");
  // Fields that do not change the forward pass are accepted.
  const auto ok = olm::convert::config_from_hf(
      llama_json(R"(, "use_cache": false, "transformers_version": "4.57.6", "bos_token_id": 1, "eos_token_id": [2, 3],
                    "initializer_range": 0.01, "torch_dtype": "bfloat16")"),
      "m/config.json");
  EXPECT_EQ(ok.config.spec().dtype, c10::ScalarType::BFloat16);
  EXPECT_EQ(ok.eos_token_id, 2);
  EXPECT_EQ(olm::convert::config_from_hf(llama_json(R"(, "torch_dtype": "float16")"), "c").config.spec().dtype,
            c10::ScalarType::Float);
  // Generation settings in config.json (Gemma3's cache_implementation) change nothing.
  olm::convert::config_from_hf(llama_json(R"(, "cache_implementation": "hybrid", "max_length": 20)"), "c");
  // YaRN's default temperature, stated (as OLMo-3's config.json does), is accepted.
  const auto yarn = olm::convert::config_from_hf(
      llama_json(R"(, "rope_scaling": {"rope_type": "yarn", "factor": 8.0, "attention_factor": 1.2079441541679836,
                     "original_max_position_embeddings": 16})"),
      "c");
  EXPECT_EQ(yarn.config.spec().blocks[0].attention.rope->scaling->name, "yarn");
}

TEST(HfConfig, Olmo3LayerTypesAndGemma3LocalRope) {
  const auto olmo3 = olm::convert::config_from_hf(
      R"({"architectures": ["Olmo3ForCausalLM"], "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 3, "num_attention_heads": 4, "sliding_window": 16,
          "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
          "rope_scaling": {"rope_type": "linear", "factor": 2}})",
      "c");
  const auto& b = olmo3.config.spec().blocks;
  EXPECT_EQ(b[0].attention.window_size, 16);
  EXPECT_FALSE(b[1].attention.window_size.has_value());
  EXPECT_FALSE(b[0].attention.rope->scaling.has_value());  // sliding layers: plain RoPE
  EXPECT_TRUE(b[1].attention.rope->scaling.has_value());
  const auto gemma = olm::convert::config_from_hf(
      R"({"architectures": ["Gemma3ForCausalLM"], "vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16,
          "query_pre_attn_scalar": 16, "sliding_window": 8, "sliding_window_pattern": 2,
          "rope_theta": 1000000, "rope_local_base_freq": 10000, "torch_dtype": "bfloat16"})",
      "c");
  const auto& g = gemma.config.spec();
  EXPECT_EQ(g.blocks[0].attention.rope->theta, 10000);
  EXPECT_EQ(g.blocks[0].attention.window_size, 8);
  EXPECT_EQ(g.blocks[1].attention.rope->theta, 1000000);
  EXPECT_FALSE(g.blocks[1].attention.window_size.has_value());
  EXPECT_TRUE(g.tie_word_embeddings);  // Gemma3TextConfig's default
  EXPECT_EQ(*g.embed_scale, 8.0);       // sqrt(64), exact in bfloat16
}

TEST(HfNames, MoePlanStacksExpertsAndTransposesDownProj) {
  const auto hf = olm::convert::config_from_hf(
      R"({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
          "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 3, "num_experts_per_tok": 2,
          "moe_intermediate_size": 8})",
      "c");
  olm::ModelOptions options;
  options.init_weights = false;
  olm::Model model(hf.config, "cpu", options);
  const auto plans = olm::convert::hf_tensor_plan(hf.config.spec(), hf.architecture, model.parameters());
  bool saw_w2 = false, saw_router = false;
  for (const auto& p : plans) {
    if (p.olm_name == "blocks.0.feed_forward_moe.experts.mlp.w2") {
      saw_w2 = true;
      ASSERT_EQ(p.pieces.size(), 3u);
      EXPECT_EQ(p.pieces[2].hf_name, "model.layers.0.mlp.experts.2.down_proj.weight");
      EXPECT_EQ(p.pieces[2].hf_shape, (std::vector<int64_t>{32, 8}));
      EXPECT_EQ(p.pieces[2].row_offset, 16);
      EXPECT_TRUE(p.pieces[2].transposed);
    }
    if (p.olm_name == "blocks.0.feed_forward_moe.router.weight") {
      saw_router = true;
      EXPECT_EQ(p.pieces[0].hf_name, "model.layers.0.mlp.gate.weight");
      EXPECT_EQ(p.pieces[0].hf_shape, (std::vector<int64_t>{3, 32}));
    }
    EXPECT_EQ(p.offset, 0.0);
  }
  EXPECT_TRUE(saw_w2 && saw_router);
}

}  // namespace
