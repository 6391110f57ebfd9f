// core/config: JSON and FlatBuffers round trips, presets, validation messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/config/config.h"
#include "core/model.h"
#include "core/error.h"
#include "test_util.h"

using ::testing::HasSubstr;

namespace {

using olm::testing::expect_error;

const std::string kTiny = R"({"d_model": 64, "vocab_size": 256, "n_layers": 2,
  "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000},
    "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "feed_forward": {"hidden_size": 192, "bias": false},
    "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
  "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}


TEST(Config, JsonAndFlatBufferRoundTripsAreExact) {
  for (const auto& config : {olm::Config::from_json(kTiny), olm::preset("olmo2_7B", 100278),
                             olm::preset("llama3_70B", 128256)}) {
    const std::string json = config.to_json();
    EXPECT_EQ(olm::Config::from_json(json).to_json(), json);
    const auto fb = config.to_flatbuffer();
    EXPECT_EQ(olm::Config::from_flatbuffer(fb.data(), fb.size()).to_flatbuffer(), fb);
    EXPECT_EQ(olm::Config::from_json(json).to_flatbuffer(), fb);
  }
  // Field names read as OLMo-core's.
  const std::string json = olm::preset("olmo2_30M", 16384).to_json();
  for (const char* field : {"\"d_model\": 256", "\"n_heads\": 8", "\"hidden_size\": 768", "\"qk_norm\"",
                            "\"reordered_norm\"", "\"rope\"", "\"eps\": 0.000001"})
    EXPECT_THAT(json, HasSubstr(field));
}

TEST(Config, PresetsMatchOlmoCoreCounts) {
  // Numbers computed by OLMo-core 3.0.0 (TransformerConfig.<preset>(vocab).num_params and
  // .build(init_device="meta").num_flops_per_token(256)).
  const auto c = olm::preset("olmo2_30M", 16384);
  EXPECT_EQ(c.num_params().total, 11800832);
  EXPECT_EQ(c.num_params().non_embedding, 7606528);
  // Hand-derived from the formula: per layer 6 x (4 x 256 x 256 + 2 x 256) attention params
  // (q/k/v/out + q_norm/k_norm), 6 x 3 x 256 x 768 feed-forward params, 12 x 256 x 257 / 2
  // causal attention pairs per token at seq 256; plus 6 x (256 + 256 x 16384) for the head.
  const int64_t per_layer = 6 * (4 * 256 * 256 + 2 * 256) + 6 * 3 * 256 * 768 + 12 * 256 * (256 * 257 / 2) / 256;
  EXPECT_EQ(c.num_flops_per_token(256), 4 * per_layer + 6 * (256 + 256 * 16384));
  EXPECT_EQ(olm::preset("llama2_7B", 32000).num_params().total, 6738415616);
  EXPECT_GE(olm::preset_names().size(), 25u);
  expect_error([] { olm::preset("olmo9_1T", 10); }, olm::ErrorCode::kInvalidArgument, "olmo2_30M");
  expect_error([] { olm::preset("olmo2_30M", 0); }, olm::ErrorCode::kInvalidArgument, "vocab_size");
  expect_error([&] { c.num_flops_per_token(0); }, olm::ErrorCode::kInvalidArgument, "seq_len");
}

TEST(Config, ValidationNamesTheField) {
  using olm::ErrorCode;
  struct Case {
    std::string from, to, needle;
    ErrorCode code;
  };
  for (const auto& c : std::vector<Case>{
           {"\"d_model\": 64", "\"d_model\": 66", "d_model (66) must be divisible by block.attention.n_heads", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"n_kv_heads\": 3", "block.attention.n_heads (4) must be divisible by block.attention.n_kv_heads (3)", ErrorCode::kInvalidConfig},
           {"\"d_model\": 64", "\"d_model\": 0", "d_model must be positive", ErrorCode::kInvalidConfig},
           {"\"vocab_size\": 256", "\"vocab_size\": -3", "vocab_size must be positive", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 0", "n_layers must be positive", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 0", "block.attention.n_heads must be positive", ErrorCode::kInvalidConfig},
           {"\"hidden_size\": 192", "\"hidden_size\": 0", "block.feed_forward.hidden_size must be positive", ErrorCode::kInvalidConfig},
           {"\"name\": \"reordered_norm\"", "\"name\": \"sideways\"", "block.name: unknown value 'sideways' (known: default, reordered_norm, default_scaled, peri_norm, moe, moe_reordered_norm, moe_hybrid, moe_hybrid_reordered_norm)", ErrorCode::kInvalidConfig},
           {"\"hidden_size\": 192", "\"hidden_size\": 192, \"activation\": \"swoosh\"", "block.feed_forward.activation: unknown value 'swoosh' (known: elu, gelu, gelu_tanh, identity, leaky_relu, mish, relu, selu, sigmoid, silu, softmax, softplus, swish, tanh)", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"dtype\": \"float8\"", "dtype: unknown value 'float8'", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"init_method\": \"magic\"", "init_method: unknown value 'magic'", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"head_dim\": 15", "head_dim (15) times rope.partial_rotary_factor gives 15 rotary dimensions", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"dropout\": 1.5", "block.attention.dropout must be in [0, 1)", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": -1", "block.attention.rope.theta", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"bogus\": 1", "unknown field: bogus", ErrorCode::kParse},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"gate\": {\"granularity\": \"per-token\"}", "block.attention.gate.granularity: unknown value 'per-token' (known: headwise, elementwise)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"sliding_window\": {\"pattern\": [0]}", "block.attention.sliding_window.pattern: window sizes must be positive or -1 (got 0)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"sliding_window\": {\"pattern\": []}", "block.attention.sliding_window.pattern: empty", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": 500000, \"no_global_rope\": true", "no_global_rope requires block.attention.sliding_window", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"embed_scale\": -1", "embed_scale must be a positive finite number", ErrorCode::kInvalidConfig},
           {"\"d_model\": 64", "\"d_model\": \"wide\"", "field 'd_model'", ErrorCode::kParse},
           {"\"d_model\": 64", "\"d_model\": 99999999999", "d_model", ErrorCode::kParse},
           {"\"bias\": false}, \"bias\"", "\"bias\": \"no\"}, \"bias\"", "field 'bias'", ErrorCode::kParse},
       }) {
    const std::string json = replace(kTiny, c.from, c.to);
    expect_error([&] { olm::Config::from_json(json); }, c.code, c.needle);
  }
  // d_model 1 << 30 in 100000 layers is absurd even though each field is positive.
  const std::string huge = replace(replace(kTiny, "\"d_model\": 64", "\"d_model\": 1073741824"), "\"n_layers\": 2",
                                   "\"n_layers\": 100000");
  expect_error([&] { olm::Config::from_json(huge); }, ErrorCode::kInvalidConfig, "1e15");
  expect_error([] { olm::Config::from_json("{\"d_model\": 8,"); }, ErrorCode::kParse, "config JSON");
  expect_error([] { olm::Config::from_json("{\"d_model\": 8}"); }, ErrorCode::kParse, "required field is missing: block");
  expect_error([] { olm::Config::from_json(""); }, ErrorCode::kParse, "config JSON");
}

// OLM-style models: a classic (ungated) feed-forward with any registered activation, a
// LayerNorm with bias; the config's count is the built model's.
TEST(Config, ClassicFeedForwardModelsBuildAndCount) {
  for (const char* act : {"gelu", "relu", "mish"}) {
    const std::string json = replace(replace(kTiny, "\"hidden_size\": 192, \"bias\": false",
                                             std::string("\"hidden_size\": 256, \"name\": \"classic\", \"activation\": \"") + act + "\""),
                                     "\"layer_norm\": {\"name\": \"rms\", \"eps\": 1e-6, \"bias\": false}},",
                                     "\"layer_norm\": {\"name\": \"default\"}},");
    const auto config = olm::Config::from_json(json);
    olm::Model model(config, "cpu", {});
    EXPECT_EQ(model.num_params(), config.num_params().total) << act;
    auto logits = model.forward(at::arange(6, at::kLong).view({1, 6}), 0);
    EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
    EXPECT_EQ(config.to_json().find("w3"), std::string::npos);
  }
}

TEST(Config, MalformedFlatBuffersAreParseErrors) {
  const auto fb = olm::Config::from_json(kTiny).to_flatbuffer();
  // Every truncation fails cleanly (or, losing only padding, reads the same config).
  for (size_t n = 0; n < fb.size(); ++n) {
    try {
      // A prefix that loses only trailing padding is still the same buffer.
      const auto again = olm::Config::from_flatbuffer(fb.data(), n).to_flatbuffer();
      EXPECT_EQ(again, fb) << "a " << n << "-byte prefix was accepted as a different config";
    } catch (const olm::Error& e) {
      EXPECT_EQ(e.code(), olm::ErrorCode::kParse);
    }
  }
  auto wrong_id = fb;
  wrong_id[4] = 'X';
  expect_error([&] { olm::Config::from_flatbuffer(wrong_id.data(), wrong_id.size()); }, olm::ErrorCode::kParse,
               "wrong file identifier");
  // Random corruption never crashes; it is rejected or yields a config that validates.
  uint64_t state = 12345;
  for (int trial = 0; trial < 500; ++trial) {
    auto bad = fb;
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      bad[8 + (state >> 33) % (bad.size() - 8)] = static_cast<uint8_t>(state >> 11);
    }
    try {
      olm::Config::from_flatbuffer(bad.data(), bad.size());
    } catch (const olm::Error& e) {
      EXPECT_TRUE(e.code() == olm::ErrorCode::kParse || e.code() == olm::ErrorCode::kInvalidConfig) << e.what();
    }
  }
}

}  // namespace
