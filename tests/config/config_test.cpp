// core/config: JSON and FlatBuffers round trips, named blocks, validation messages.
#include <flatbuffers/flatbuffers.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <random>

#include "core/config/config.h"
#include "core/io/json.h"
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

TEST(Config, NamedBlocksPatternsAndOverrides) {
  using olm::ErrorCode;
  const std::string block_a = R"({"name": "reordered_norm", "attention": {"n_heads": 4}, "layer_norm": {"name": "rms"},
      "feed_forward": {"hidden_size": 32}})";
  const std::string block_b = R"({"attention": {"n_heads": 2, "n_kv_heads": 1}, "layer_norm": {},
      "feed_forward": {"hidden_size": 48, "name": "classic", "activation": "relu"}})";
  const std::string head = R"("d_model": 16, "vocab_size": 50, "n_layers": 5, "lm_head": {})";
  const auto named = olm::Config::from_json("{" + head + R"(, "named_blocks": [{"name": "a", "block": )" + block_a +
                                            R"(}, {"name": "b", "block": )" + block_b +
                                            R"(}], "block_pattern": ["a", "a", "b"]})");
  const auto& blocks = named.spec().blocks;
  ASSERT_EQ(blocks.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const bool is_b = i % 3 == 2;  // the pattern a a b cycled and cut at 5 layers: a a b a a
    EXPECT_EQ(blocks[i].feed_forward.hidden_size, is_b ? 48 : 32) << "layer " << i;
    EXPECT_EQ(blocks[i].attention.n_kv_heads, is_b ? 1 : 4) << "layer " << i;
  }
  // Per layer: a = attention 4*16*16 (+4*16 bias) + ff 3*16*32 (+2*32+16 bias) + 2 RMSNorms
  // (weight and, by default, bias); b = attention 16*16 + 16*16 + 2*16*8 (+16+8+8+16 bias)
  // + ff 2*16*48 (+48+16) + 2 LayerNorms.
  const int64_t a = (4 * 16 * 16 + 4 * 16) + (3 * 16 * 32 + 2 * 32 + 16) + 2 * 2 * 16;
  const int64_t b = (2 * 16 * 16 + 2 * 16 * 8 + 16 + 8 + 8 + 16) + (2 * 16 * 48 + 48 + 16) + 2 * 2 * 16;
  const int64_t head_params = 16 * 50 + 50;  // w_out with bias, no final norm
  EXPECT_EQ(named.num_params().total, 16 * 50 + 4 * a + b + head_params);
  // The JSON round trip keeps the named blocks and the pattern.
  EXPECT_EQ(olm::Config::from_json(named.to_json()).to_json(), named.to_json());
  const auto overridden = olm::Config::from_json("{" + head + R"(, "block": )" + block_a +
                                                 R"(, "block_overrides": [{"layer": 4, "block": )" + block_b + "}]}");
  for (size_t i = 0; i < 5; ++i)
    EXPECT_EQ(overridden.spec().blocks[i].feed_forward.hidden_size, i == 4 ? 48 : 32) << "layer " << i;
  EXPECT_EQ(overridden.num_params().total, 16 * 50 + 4 * a + b + head_params);
  // Each mistake names its field.
  const std::string both = "{" + head + R"(, "block": )" + block_a + R"(, "named_blocks": [{"name": "a", "block": )" + block_a + R"(}], "block_pattern": ["a"]})";
  expect_error([&] { olm::Config::from_json(both); }, ErrorCode::kInvalidConfig, "block: give either block or named_blocks");
  expect_error([&] { olm::Config::from_json("{" + head + "}"); }, ErrorCode::kInvalidConfig, "block: required field is missing");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "named_blocks": [{"name": "a", "block": )" + block_a + "}]}"); },
               ErrorCode::kInvalidConfig, "block_pattern: required and non-empty");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "named_blocks": [{"name": "a", "block": )" + block_a + R"(}], "block_pattern": ["a", "c"]})"); },
               ErrorCode::kInvalidConfig, "block_pattern[1]: unknown block 'c' (named_blocks: a)");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "named_blocks": [{"name": "a", "block": )" + block_a + R"(}, {"name": "a", "block": )" + block_b + R"(}], "block_pattern": ["a"]})"); },
               ErrorCode::kInvalidConfig, "named_blocks[1].name: 'a' is used twice");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "block": )" + block_a + R"(, "block_pattern": ["a"]})"); },
               ErrorCode::kInvalidConfig, "block_pattern: needs named_blocks");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "block": )" + block_a + R"(, "block_overrides": [{"layer": 5, "block": )" + block_b + "}]}"); },
               ErrorCode::kInvalidConfig, "block_overrides[0].layer must be in [0, n_layers) = [0, 5) (got 5)");
  expect_error([&] { olm::Config::from_json("{" + head + R"(, "named_blocks": [{"name": "a", "block": {"attention": {"n_heads": 0}, "layer_norm": {}, "feed_forward": {"hidden_size": 8}}}], "block_pattern": ["a"]})"); },
               ErrorCode::kInvalidConfig, "named_blocks[a].attention.n_heads must be positive");
}

TEST(Config, NormalizedTransformerIsConsistentOrRefused) {
  using olm::ErrorCode;
  const std::string ngpt = R"({"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2,
    "init_method": "normalized", "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4,
    "qk_norm": {"name": "l2_norm"}, "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
    "lm_head": {"name": "normalized"}})";
  const auto c = olm::Config::from_json(ngpt);
  // OLMo-core's counts: attention 4 x 32 x 32 + sq, sk (32 + 32); feed-forward 3 x 32 x 96 + sw1, sw3
  // (2 x 96); attn_alpha, mlp_alpha (2 x 32); head 32 x 64 + sz (64); no biases, no norms.
  const int64_t block = (4 * 32 * 32 + 64) + (3 * 32 * 96 + 2 * 96) + 2 * 32;
  EXPECT_EQ(c.num_params().total, 64 * 32 + 2 * block + 32 * 64 + 64);
  EXPECT_EQ(olm::Config::from_json(c.to_json()).to_json(), c.to_json());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = ngpt;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  for (const auto& [json, needle] : std::vector<std::pair<std::string, std::string>>{
           {with("\"name\": \"normalized\", \"d_model\"", "\"d_model\""), "block.name: normalized blocks need the normalized transformer"},
           {with("\"lm_head\": {\"name\": \"normalized\"}", "\"lm_head\": {}"), "lm_head.name: the normalized transformer needs the normalized head"},
           {with("\"name\": \"normalized\", \"hidden_size\"", "\"hidden_size\""), "block.feed_forward.name: normalized blocks need the normalized feed-forward"},
           {with("\"hidden_size\": 96", "\"hidden_size\": 96, \"activation\": \"gelu\""), "block.feed_forward.activation: the normalized feed-forward supports only 'silu'"},
           {with("\"n_heads\": 4", "\"n_heads\": 4, \"bias\": true"), "block.attention.bias: normalized attention has no biases"},
           {with("\"n_heads\": 4", "\"n_heads\": 4, \"head_dim\": 4"), "block.attention.head_dim"},
           {with("\"lm_head\": {\"name\": \"normalized\"}", "\"lm_head\": {\"name\": \"normalized\", \"layer_norm\": {}}"), "lm_head.layer_norm: the normalized head has no final norm"},
           {with("\"init_method\"", "\"embed_scale\": 2.0, \"init_method\""), "embed_scale are not supported by the normalized transformer"},
           {with("{\"name\": \"l2_norm\"}", "{\"name\": \"l2_norm\", \"bias\": true}"), "l2_norm has no parameters"}}) {
    SCOPED_TRACE(json);
    expect_error([&] { olm::Config::from_json(json); }, ErrorCode::kInvalidConfig, needle);
  }
}

TEST(Config, JsonValueKindsAreCheckedByField) {
  // FlatBuffers' parser alone would read 2 as true and true as 1.
  const std::string base = R"({"d_model": 16, "vocab_size": 50, "n_layers": 1, "lm_head": {"bias": false},
    "block": {"attention": {"n_heads": 2, "bias": BIAS}, "layer_norm": {}, "feed_forward": {"hidden_size": 8}},
    "named_blocks": NAMED})";
  auto with = [&](const std::string& bias, const std::string& named = "null") {
    std::string s = base;
    s.replace(s.find("BIAS"), 4, bias);
    s.replace(s.find("NAMED"), 5, named);
    return s;
  };
  EXPECT_FALSE(olm::Config::from_json(with("false")).spec().blocks[0].attention.bias);
  EXPECT_TRUE(olm::Config::from_json(with("null")).spec().blocks[0].attention.bias);  // null: unset
  using olm::ErrorCode;
  expect_error([&] { olm::Config::from_json(with("1")); }, ErrorCode::kParse,
               "field 'block.attention.bias': expected true or false, not 1");
  expect_error([&] { olm::Config::from_json(with("\"yes\"")); }, ErrorCode::kParse,
               "field 'block.attention.bias': expected true or false");
  std::string boolean_size = with("true");
  boolean_size.replace(boolean_size.find("16"), 2, "true");
  expect_error([&] { olm::Config::from_json(boolean_size); }, ErrorCode::kParse,
               "field 'd_model': expected an integer, not true");
  std::string quoted = with("true");
  quoted.replace(quoted.find("\"hidden_size\": 8"), 16, "\"hidden_size\": \"8\"");
  expect_error([&] { olm::Config::from_json(quoted); }, ErrorCode::kParse,
               "field 'block.feed_forward.hidden_size': expected an integer, not the string \"8\"");
  // Inside vectors of tables too, with the element's index.
  expect_error([&] { olm::Config::from_json(with("true", R"([{"name": "a", "block": {"dropout": true}}])")); },
               ErrorCode::kParse, "field 'named_blocks[0].block.dropout': expected a number, not true");
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
           {"\"name\": \"reordered_norm\"", "\"name\": \"sideways\"", "block.name: unknown value 'sideways' (known: default, reordered_norm, default_scaled, peri_norm, parallel, normalized, moe, moe_reordered_norm, moe_hybrid, moe_hybrid_reordered_norm)", ErrorCode::kInvalidConfig},
           {"\"hidden_size\": 192", "\"hidden_size\": 192, \"activation\": \"swoosh\"", "block.feed_forward.activation: unknown value 'swoosh' (known: elu, gelu, gelu_tanh, identity, leaky_relu, mish, relu, selu, sigmoid, silu, softmax, softplus, swish, tanh)", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"dtype\": \"float8\"", "dtype: unknown value 'float8'", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"init_method\": \"magic\"", "init_method: unknown value 'magic'", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"head_dim\": 15", "head_dim (15) times rope.partial_rotary_factor gives 15 rotary dimensions", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"dropout\": 1.5", "block.attention.dropout must be in [0, 1)", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": -1", "block.attention.rope.theta", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"bogus\": 1", "unknown field 'bogus' in model config", ErrorCode::kParse},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"gate\": {\"granularity\": \"per-token\"}", "block.attention.gate.granularity: unknown value 'per-token' (known: headwise, elementwise)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"sliding_window\": {\"pattern\": [0]}", "block.attention.sliding_window.pattern: window sizes must be positive or -1 (got 0)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"sliding_window\": {\"pattern\": []}", "block.attention.sliding_window.pattern: empty", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": 500000, \"no_global_rope\": true", "no_global_rope requires block.attention.sliding_window", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"embed_scale\": -1", "embed_scale must be a positive finite number", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"backend\": \"flash_9\"", "block.attention.backend: unknown value 'flash_9' (known: torch, explicit)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"softcap\": 0", "block.attention.softcap must be a positive finite number (got 0)", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"softcap\": -50", "block.attention.softcap must be a positive finite number", ErrorCode::kInvalidConfig},
           {"\"n_heads\": 4", "\"n_heads\": 4, \"softcap\": 50, \"backend\": \"torch\"", "block.attention.softcap needs block.attention.backend \"explicit\"", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": 500000, \"xpos_scale_base\": 0", "block.attention.rope.xpos_scale_base must be a positive finite number", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": 500000, \"scaling\": {\"name\": \"dynamic_ntk\", \"factor\": 0.5}", "block.attention.rope.scaling.factor must be >= 1 for dynamic_ntk", ErrorCode::kInvalidConfig},
           {"\"theta\": 500000", "\"theta\": 500000, \"scaling\": {\"name\": \"ntk\"}", "block.attention.rope.scaling.name: unknown value 'ntk' (known: abf, pi, stepwise, yarn, dynamic_ntk)", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"position_embedding\": {\"name\": \"rotary\"}", "position_embedding.name: unknown value 'rotary' (known: learned, sinusoidal)", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"position_embedding\": {\"name\": \"learned\"}", "position_embedding.max_sequence_length is required for learned", ErrorCode::kInvalidConfig},
           {"\"n_layers\": 2", "\"n_layers\": 2, \"position_embedding\": {\"name\": \"learned\", \"max_sequence_length\": 0}", "position_embedding.max_sequence_length must be positive", ErrorCode::kInvalidConfig},
           {"\"bias\": false}, \"bias\": false}", "\"bias\": false}, \"bias\": true}, \"tie_word_embeddings\": true", "tie_word_embeddings requires lm_head.bias false", ErrorCode::kInvalidConfig},
           {"\"qk_norm\": {\"name\": \"rms\", \"eps\": 1e-6, \"bias\": false}", "\"qk_norm\": {\"name\": \"l2_norm\", \"elementwise_affine\": true}", "block.attention.qk_norm: l2_norm has no parameters", ErrorCode::kInvalidConfig},
           {"\"d_model\": 64", "\"d_model\": \"wide\"", "field 'd_model'", ErrorCode::kParse},
           {"\"d_model\": 64", "\"d_model\": 99999999999", "d_model", ErrorCode::kParse},
           {"\"bias\": false}, \"bias\"", "\"bias\": \"no\"}, \"bias\"", "field 'lm_head.layer_norm.bias': expected true or false", ErrorCode::kParse},
       }) {
    const std::string json = replace(kTiny, c.from, c.to);
    expect_error([&] { olm::Config::from_json(json); }, c.code, c.needle);
  }
  // d_model 1 << 30 in 100000 layers is absurd even though each field is positive.
  const std::string huge = replace(replace(kTiny, "\"d_model\": 64", "\"d_model\": 1073741824"), "\"n_layers\": 2",
                                   "\"n_layers\": 100000");
  expect_error([&] { olm::Config::from_json(huge); }, ErrorCode::kInvalidConfig, "1e15");
  expect_error([] { olm::Config::from_json("{\"d_model\": 8,"); }, ErrorCode::kParse, "config JSON");
  expect_error([] { olm::Config::from_json("{\"d_model\": 8}"); }, ErrorCode::kParse, "field 'lm_head' is required but missing");
  expect_error([] { olm::Config::from_json(""); }, ErrorCode::kParse, "config JSON");
}

// The catalogue's attention fields survive JSON and FlatBuffer round trips and resolve.
TEST(Config, AttentionBackendAndSoftcapRoundTrip) {
  const auto config = olm::Config::from_json(replace(kTiny, "\"n_heads\": 4", "\"n_heads\": 4, \"softcap\": 50"));
  const std::string json = config.to_json();
  EXPECT_THAT(json, HasSubstr("\"softcap\": 50"));
  EXPECT_EQ(olm::Config::from_json(json).to_json(), json);
  const auto fb = config.to_flatbuffer();
  EXPECT_EQ(olm::Config::from_flatbuffer(fb.data(), fb.size()).to_json(), json);
  const auto& att = config.spec().blocks[0].attention;
  EXPECT_EQ(att.softcap, 50.0);
  EXPECT_EQ(att.backend, "explicit") << "soft-capping defaults to the explicit softmax";
  EXPECT_EQ(olm::Config::from_json(kTiny).spec().blocks[0].attention.backend, "torch");
  EXPECT_FALSE(olm::Config::from_json(kTiny).spec().blocks[0].attention.softcap);
  const auto explicit_backend = olm::Config::from_json(replace(kTiny, "\"n_heads\": 4", "\"n_heads\": 4, \"backend\": \"explicit\""));
  EXPECT_EQ(explicit_backend.spec().blocks[0].attention.backend, "explicit");
  EXPECT_EQ(explicit_backend.num_params().total, olm::Config::from_json(kTiny).num_params().total);
}

// Position, tying and norm fields: round trips, resolution and parameter counts (tied: the
// table once, as OLMo-core's num_params; learned positions: max_sequence_length x d_model,
// outside the non-embedding count).
TEST(Config, PositionsTyingAndL2NormRoundTripAndCount) {
  const std::string json_in = replace(replace(replace(kTiny,
      "\"theta\": 500000", "\"theta\": 500000, \"interleaved\": true, \"xpos_scale_base\": 512, "
      "\"scaling\": {\"name\": \"dynamic_ntk\", \"old_context_len\": 2048}"),
      "\"n_heads\": 4", "\"n_heads\": 4, \"alibi\": true"),
      "\"n_layers\": 2", "\"n_layers\": 2, \"tie_word_embeddings\": true, "
      "\"position_embedding\": {\"name\": \"learned\", \"max_sequence_length\": 128}");
  const auto config = olm::Config::from_json(json_in);
  const std::string json = config.to_json();
  EXPECT_EQ(olm::Config::from_json(json).to_json(), json);
  const auto fb = config.to_flatbuffer();
  EXPECT_EQ(olm::Config::from_flatbuffer(fb.data(), fb.size()).to_json(), json);
  for (const char* field : {"\"interleaved\": true", "\"xpos_scale_base\": 512", "\"dynamic_ntk\"", "\"alibi\": true",
                            "\"tie_word_embeddings\": true", "\"max_sequence_length\": 128"})
    EXPECT_THAT(json, HasSubstr(field));
  const auto& s = config.spec();
  const auto& rope = *s.blocks[0].attention.rope;
  EXPECT_TRUE(rope.interleaved);
  EXPECT_EQ(rope.xpos_scale_base, 512.0);
  EXPECT_EQ(rope.scaling->name, "dynamic_ntk");
  EXPECT_EQ(rope.scaling->factor, 1.0) << "OLM's dynamic NTK";
  EXPECT_TRUE(s.blocks[0].attention.alibi);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_EQ(s.position_embedding->max_sequence_length, 128);
  const auto plain = olm::Config::from_json(kTiny).num_params();
  EXPECT_EQ(config.num_params().total, plain.total - 64 * 256 + 128 * 64);
  EXPECT_EQ(config.num_params().non_embedding, plain.non_embedding - 64 * 256);
  olm::Model model(config, "cpu", {});
  EXPECT_EQ(model.num_params(), config.num_params().total);
  // l2_norm: no parameters.
  const auto l2 = olm::Config::from_json(replace(kTiny, "\"qk_norm\": {\"name\": \"rms\", \"eps\": 1e-6, \"bias\": false}",
                                                 "\"qk_norm\": {\"name\": \"l2_norm\"}"));
  EXPECT_EQ(l2.num_params().total, plain.total - 2 * (64 + 64));  // q_norm and k_norm weights, 2 layers
  EXPECT_FALSE(l2.spec().blocks[0].attention.qk_norm->elementwise_affine);
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


// ---- One validation whichever door a config comes in by, and JSON that reads back (#12, #11).

std::vector<uint8_t> pack(const olm::fb::TransformerConfigT& native) {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(olm::fb::TransformerConfig::Pack(builder, &native), olm::fb::TransformerConfigIdentifier());
  return {builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize()};
}

// The native object and the buffer doors refuse alike, naming the field.
void expect_refused_by_every_door(const olm::fb::TransformerConfigT& native, const std::string& needle) {
  SCOPED_TRACE(needle);
  expect_error([&] { olm::Config::from_native(native); }, olm::ErrorCode::kInvalidConfig, needle);
  const auto buffer = pack(native);
  expect_error([&] { olm::Config::from_flatbuffer(buffer.data(), buffer.size()); }, olm::ErrorCode::kInvalidConfig,
               needle);
}

// The JSON text of an accepted config reads back as the same config, buffer for buffer.
void expect_round_trip(const olm::Config& config) {
  const std::string json = config.to_json();
  const auto again = olm::Config::from_json(json);
  EXPECT_EQ(again.to_flatbuffer(), config.to_flatbuffer()) << json;
  EXPECT_EQ(again.to_json(), json);
}

TEST(ConfigDoors, BlocksNoLayerUsesAreValidatedToo) {
  const auto tiny = olm::Config::from_json(kTiny).native();
  // `block` overridden on every layer: its eps 0 was accepted (and written as JSON).
  auto overridden = tiny;
  for (int32_t layer = 0; layer < 2; ++layer) {
    auto o = std::make_unique<olm::fb::TransformerBlockOverrideT>();
    o->layer = layer;
    o->block = std::make_unique<olm::fb::TransformerBlockConfigT>(*tiny.block);
    overridden.block_overrides.push_back(std::move(o));
  }
  EXPECT_NO_THROW(olm::Config::from_native(overridden));
  overridden.block->layer_norm->eps = 0.0;
  expect_refused_by_every_door(overridden, "block.layer_norm.eps must be a positive finite number (got 0)");
  overridden.block->layer_norm->eps = 1e-6;
  overridden.block->attention->qk_norm->eps = 0.0;
  expect_refused_by_every_door(overridden, "block.attention.qk_norm.eps must be a positive finite number");
  // A named block the pattern never picks.
  auto named = tiny;
  named.block.reset();
  for (const char* name : {"used", "spare"}) {
    auto nb = std::make_unique<olm::fb::NamedTransformerBlockConfigT>();
    nb->name = name;
    nb->block = std::make_unique<olm::fb::TransformerBlockConfigT>(*tiny.block);
    named.named_blocks.push_back(std::move(nb));
  }
  named.block_pattern = {"used"};
  EXPECT_NO_THROW(olm::Config::from_native(named));
  named.named_blocks[1]->block->attention->qk_norm->eps = 0.0;
  expect_refused_by_every_door(named, "named_blocks[spare].attention.qk_norm.eps must be a positive finite number");
  // NaN: JSON cannot hold it at all (it was written as "nan").
  named.named_blocks[1]->block->attention->qk_norm->eps = std::nan("");
  expect_refused_by_every_door(named, "named_blocks[1].block.attention.qk_norm.eps: not a finite number");
  named.named_blocks[1]->block->attention->qk_norm->eps = 1e-6;
  named.named_blocks[1]->block->attention->sliding_window = std::make_unique<olm::fb::SlidingWindowAttentionConfigT>();
  named.named_blocks[1]->block->attention->sliding_window->pattern = {0};
  expect_refused_by_every_door(named, "named_blocks[spare].attention.sliding_window.pattern");
}

TEST(ConfigDoors, StringsMustBeUtf8WhicheverDoor) {
  auto native = olm::Config::from_json(kTiny).native();
  native.freeze_params = {"blocks.0.\xff*"};
  expect_refused_by_every_door(native, "freeze_params[0]: not valid UTF-8 (byte 0xFF at offset 9)");
  native.freeze_params = {"ok"};
  native.block->attention->rope->name = "\xc3";  // a truncated two-byte sequence
  expect_refused_by_every_door(native, "block.attention.rope.name: not valid UTF-8");
  native.block->attention->rope->name = "\xed\xa0\x80";  // an encoded UTF-16 surrogate
  expect_refused_by_every_door(native, "block.attention.rope.name: not valid UTF-8");
  // JSON text with the same bytes: a parse error naming the field and the line.
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"n_layers\": 2", "\"n_layers\": 2,\n \"dtype\": \"\xff\"")); },
               olm::ErrorCode::kParse, "config JSON, line 2, column 11: field 'dtype': not valid UTF-8");
  // Valid UTF-8, escapes and control characters are kept exactly.
  native.block->attention->rope->name = "default";
  native.freeze_params = {"bl\xc3\xb6" "cks.*", "quote\"back\\slash\nnew\tline\x01", "\xf0\x9f\x98\x80"};
  const auto config = olm::Config::from_native(native);
  expect_round_trip(config);
  EXPECT_EQ(olm::Config::from_json(config.to_json()).native().freeze_params, native.freeze_params);
  // \u escapes, surrogate pairs included, read as UTF-8; a lone surrogate is malformed JSON.
  const auto escaped = olm::Config::from_json(
      replace(kTiny, "\"n_layers\": 2", "\"n_layers\": 2, \"freeze_params\": [\"\\u00e9\\ud83d\\ude00\"]"));
  EXPECT_EQ(escaped.native().freeze_params[0], "\xc3\xa9\xf0\x9f\x98\x80");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"n_layers\": 2", "\"n_layers\": 2, \"dtype\": \"\\ud83d\"")); },
               olm::ErrorCode::kParse, "lone UTF-16 surrogate");
}

TEST(ConfigJson, DoublesAreWrittenShortestAndReadBackExactly) {
  using olm::io::format_double;
  EXPECT_EQ(format_double(1e-17), "1e-17");
  EXPECT_EQ(format_double(1e-6), "0.000001");
  EXPECT_EQ(format_double(1e-7), "1e-7");
  EXPECT_EQ(format_double(0.02), "0.02");
  EXPECT_EQ(format_double(500000), "500000");
  EXPECT_EQ(format_double(-2.5), "-2.5");
  EXPECT_EQ(format_double(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(format_double(1e21), "1e+21");
  EXPECT_EQ(format_double(123456789012345680000.0), "123456789012345680000");
  EXPECT_EQ(format_double(5e-324), "5e-324");
  EXPECT_EQ(format_double(1.7976931348623157e308), "1.7976931348623157e+308");
  // Any finite double: the text reads back to the same bits, and is no longer than %.17g.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200000; ++i) {
    uint64_t bits = rng();
    if (i % 4 == 0) bits &= 0x800FFFFFFFFFFFFFull | (uint64_t{rng() % 64 + 990} << 52);  // near 1
    double v = 0;
    std::memcpy(&v, &bits, sizeof v);
    if (!std::isfinite(v)) continue;
    const std::string text = format_double(v);
    double back = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), back);
    ASSERT_EQ(r.ec, std::errc()) << text;
    ASSERT_EQ(r.ptr, text.data() + text.size()) << text;
    ASSERT_EQ(std::memcmp(&back, &v, sizeof v), 0) << text;
  }
  // Through a config and FlatBuffers' JSON parser: 1e-17 was written as 0 and then refused.
  auto native = olm::Config::from_json(kTiny).native();
  native.block->layer_norm->eps = 1e-17;
  native.block->attention->rope->theta = 1.0 / 3;
  native.init_std = 0.1 + 0.2;
  native.embedding_init_std = 5e-324;
  expect_round_trip(olm::Config::from_native(native));
  std::uniform_real_distribution<double> exponent(-300, 300);
  for (int i = 0; i < 100; ++i) {
    native.block->attention->rope->theta = std::pow(10.0, exponent(rng)) * (1 + static_cast<double>(rng() % 1000) / 997);
    const auto config = olm::Config::from_native(native);
    const auto again = olm::Config::from_json(config.to_json());
    ASSERT_EQ(again.native().block->attention->rope->theta, native.block->attention->rope->theta) << config.to_json();
  }
}

TEST(ConfigJson, AcceptedCorruptBuffersStillRoundTrip) {
  const auto fb = olm::Config::from_json(kTiny).to_flatbuffer();
  uint64_t state = 99;
  int accepted = 0;
  for (int trial = 0; trial < 400; ++trial) {
    auto bad = fb;
    for (int k = 0; k < 3; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      bad[8 + (state >> 33) % (bad.size() - 8)] = static_cast<uint8_t>(state >> 11);
    }
    std::optional<olm::Config> config;
    try {
      config = olm::Config::from_flatbuffer(bad.data(), bad.size());
    } catch (const olm::Error& e) {
      EXPECT_TRUE(e.code() == olm::ErrorCode::kParse || e.code() == olm::ErrorCode::kInvalidConfig) << e.what();
      continue;
    }
    ++accepted;
    expect_round_trip(*config);
  }
  EXPECT_GT(accepted, 0);
}

TEST(ConfigLimits, InitStdAndFlopsAreBounded) {
  auto native = olm::Config::from_json(kTiny).native();
  native.init_std = 1e308;
  expect_refused_by_every_door(native, "init_std must be at most 10 (got 1e+308)");
  native.init_std = 10;
  EXPECT_NO_THROW(olm::Config::from_native(native));
  native.embedding_init_std = 11;
  expect_refused_by_every_door(native, "embedding_init_std must be at most 10");
  // FLOPs per token: an error naming seq_len instead of a wrapped number.
  const auto big = olm::preset("llama3_405B", 128256);
  EXPECT_GT(big.num_flops_per_token(131072), 0);
  for (int64_t seq_len : {int64_t{1} << 40, int64_t{1} << 62, std::numeric_limits<int64_t>::max()})
    expect_error([&] { big.num_flops_per_token(seq_len); }, olm::ErrorCode::kInvalidArgument,
                 "seq_len (" + std::to_string(seq_len) + ") is too large");
  const auto tiny = olm::Config::from_json(kTiny);
  EXPECT_GT(tiny.num_flops_per_token(int64_t{1} << 24), 0);
  expect_error([&] { tiny.num_flops_per_token(int64_t{1} << 55); }, olm::ErrorCode::kInvalidArgument, "seq_len");
}

TEST(ConfigErrors, NameTheSourceThePathAndWhatWasExpected) {
  using olm::ErrorCode;
  // A typo: the nearest field at that level, with the line and column of the key.
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"n_layers\": 2", "\"n_layers\": 2,\n\n  \"vocab_sise\": 3")); },
               ErrorCode::kParse, "config JSON, line 3, column 3: unknown field 'vocab_sise' in model config; did you mean 'vocab_size'?");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"theta\"", "\"thetta\"")); }, ErrorCode::kParse,
               "unknown field 'thetta' in 'block.attention.rope'; did you mean 'theta'?");
  // Nothing near: the known fields.
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"theta\"", "\"frequency\"")); }, ErrorCode::kParse,
               "unknown field 'frequency' in 'block.attention.rope'; known fields: name, theta, full_precision");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"hidden_size\": 192", "\"hidden_size\": 19.5")); },
               ErrorCode::kParse, "field 'block.feed_forward.hidden_size': expected an integer, not 19.5");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"hidden_size\": 192", "\"hidden_size\": 2e2")); },
               ErrorCode::kParse, "field 'block.feed_forward.hidden_size': expected an integer, not 2e2");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"d_model\": 64", "\"d_model\": 99999999999")); },
               ErrorCode::kParse, "field 'd_model': expected an integer in [-2147483648, 2147483647], not 99999999999");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"d_model\": 64", "\"d_model\": 99999999999999999999")); },
               ErrorCode::kParse, "field 'd_model': expected an integer in [-2147483648, 2147483647], not 99999999999999999999");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"theta\": 500000", "\"theta\": 1e999")); },
               ErrorCode::kParse, "field 'block.attention.rope.theta': expected a finite number, not 1e999");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"theta\": 500000", "\"theta\": [1]")); },
               ErrorCode::kParse, "field 'block.attention.rope.theta': expected a number, not an array");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"name\": \"reordered_norm\"", "\"name\": 7")); },
               ErrorCode::kParse, "field 'block.name': expected a string, not 7");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"lm_head\": {", "\"lm_head\": 3, \"x\": {")); },
               ErrorCode::kParse, "field 'lm_head': expected an object, not 3");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"d_model\": 64", "\"d_model\": 64, \"d_model\": 32")); },
               ErrorCode::kParse, "field 'd_model' is set more than once");
  expect_error([] { olm::Config::from_json(replace(kTiny, "\"attention\": {", "\"attentio\": {")); },
               ErrorCode::kParse, "unknown field 'attentio' in 'block'; did you mean 'attention'?");
  expect_error([] { olm::Config::from_json("[1, 2]"); }, ErrorCode::kParse,
               "config JSON: expected a JSON object ({...}) at the top level, not an array");
  expect_error([] { olm::Config::from_json("{\"d_model\": 8,\n  }"); }, ErrorCode::kParse,
               "config JSON: malformed JSON at line 2, column 3");
  // A source name, and a file.
  expect_error([] { olm::Config::from_json("{\"d_modle\": 8}", "my.json"); }, ErrorCode::kParse,
               "my.json, line 1, column 2: unknown field 'd_modle' in model config; did you mean 'd_model'?");
  const std::string dir = olm::testing::temp_dir("config_errors");
  const std::string path = dir + "/model.json";
  std::ofstream(path) << replace(kTiny, "\"hidden_size\": 192", "\"hidden_size\": \"big\"");
  expect_error([&] { olm::Config::from_json_file(path); }, ErrorCode::kParse,
               path + ", line 4, column 37: field 'block.feed_forward.hidden_size': expected an integer, not the string \"big\"");
  std::ofstream(path) << kTiny;
  EXPECT_EQ(olm::Config::from_json_file(path).to_json(), olm::Config::from_json(kTiny).to_json());
  expect_error([&] { olm::Config::from_json_file(dir + "/missing.json"); }, ErrorCode::kIo, dir + "/missing.json: cannot open");
}

}  // namespace
