// core/nn/transformer.cpp: whole-stack forwards, intra-document masking and sinusoidal positions against float64.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/nn/transformer.h"
#include "nn/reference.h"

using ::testing::HasSubstr;
using namespace olm::testing;

namespace {

// The whole transformer against a float64 re-run built from the reference pieces above.
TEST(Transformer, ForwardMatchesFloat64ReRun) {
  for (const auto& block : {"default", "reordered_norm"}) {
    auto config = small_config(block, std::string(block) == "reordered_norm");
    olm::nn::Transformer model(config.spec());
    olm::nn::init_weights(model);
    randomize(model, 31);  // norms away from 1, so the test sees them
    auto g = gen(32);
    auto ids = at::randint(40, {2, 9}, g, at::kLong);
    at::NoGradGuard ng;
    auto logits = model.forward(ids);
    auto params = model.named_parameters();
    auto P = [&](const std::string& name) -> at::Tensor* {
      for (auto& p : params)
        if (p.name == name) return p.tensor;
      ADD_FAILURE() << "no parameter " << name;
      return nullptr;
    };
    auto h = model.embeddings().to(at::kDouble).index_select(0, ids.flatten()).view({2, 9, 16});
    for (int64_t i = 0; i < 2; ++i) {
      const std::string pre = "blocks." + std::to_string(i) + ".";
      auto& blk = *model.blocks()[static_cast<size_t>(i)];
      const auto& spec = config.spec().blocks[static_cast<size_t>(i)];
      if (std::string(block) == "reordered_norm") {
        h = h + ref_rms(ref_attention(blk.attention(), spec.attention, h.to(at::kFloat)), P(pre + "attention_norm.weight"), 1e-6);
        h = h + ref_rms(ref_ffn(*blk.feed_forward(), "silu", h.to(at::kFloat)), P(pre + "feed_forward_norm.weight"), 1e-6);
      } else {
        h = h + ref_attention(blk.attention(), spec.attention, ref_rms(h, P(pre + "attention_norm.weight"), 1e-6).to(at::kFloat));
        h = h + ref_ffn(*blk.feed_forward(), "silu", ref_rms(h, P(pre + "feed_forward_norm.weight"), 1e-6).to(at::kFloat));
      }
    }
    auto ref = at::matmul(ref_rms(h, P("lm_head.norm.weight"), 1e-6), P("lm_head.w_out.weight")->to(at::kDouble).t());
    // The reference rounds to float32 between components (its pieces take float32 inputs),
    // so agreement is at float32 accuracy: 1e-4 on logits of magnitude ~1-10.
    EXPECT_LT(max_diff(logits, ref), 1e-4) << block;
  }
}

// An OLM-style model from JSON: LayerNorm -> attention -> residual -> LayerNorm -> SwiGLU ->
// residual, hidden size by ff_multiplier, LayerNorm -> Linear head without bias, tied
// embeddings; and OLM's Parallel merge as the "parallel" block (x + attn(ln x) + ffn(ln' x)),
// or with parallel_merge "mean" x + (attn(ln x) + ffn(ln' x)) / 2.
TEST(Transformer, OlmStyleAndParallelBlocksMatchFloat64) {
  for (const std::string variant : {"default", "parallel", "parallel_mean"}) {
    const std::string block = variant == "default" ? "default" : "parallel";
    const std::string merge = variant == "parallel_mean" ? R"(, "parallel_merge": "mean")" : "";
    auto config = olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 2, "tie_word_embeddings": true,
        "block": {"name": ")" + block + R"(")" + merge + R"(, "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
          "feed_forward": {"ff_multiplier": 2.5, "bias": false}, "layer_norm": {"name": "default"}},
        "lm_head": {"layer_norm": {"name": "default"}, "bias": false}})");
    EXPECT_EQ(config.spec().blocks[0].feed_forward.hidden_size, 40);  // int(2.5 * 16)
    EXPECT_EQ(config.spec().blocks[0].parallel_merge, variant == "parallel_mean" ? "mean" : "sum");
    EXPECT_EQ(olm::Config::from_json(config.to_json()).to_json(), config.to_json());
    EXPECT_EQ(config.to_json().find("parallel_merge") != std::string::npos, variant == "parallel_mean");
    olm::nn::Transformer model(config.spec());
    olm::nn::init_weights(model);
    randomize(model, 41);
    auto params = model.named_parameters();
    auto P = [&](const std::string& name) -> at::Tensor& {
      for (auto& p : params)
        if (p.name == name) return *p.tensor;
      ADD_FAILURE() << "no parameter " << name;
      return *params[0].tensor;
    };
    auto ln = [&](const at::Tensor& x, const std::string& name) {
      return ref_layer_norm(x, P(name + ".weight"), P(name + ".bias"), 1e-5);
    };
    auto ids = at::randint(40, {2, 9}, gen(42), at::kLong);
    at::NoGradGuard ng;
    auto logits = model.forward(ids);
    auto h = model.embeddings().to(at::kDouble).index_select(0, ids.flatten()).view({2, 9, 16});
    for (int64_t i = 0; i < 2; ++i) {
      const std::string pre = "blocks." + std::to_string(i) + ".";
      auto& blk = *model.blocks()[static_cast<size_t>(i)];
      const auto& spec = config.spec().blocks[static_cast<size_t>(i)];
      auto att = ref_attention(blk.attention(), spec.attention, ln(h, pre + "attention_norm").to(at::kFloat));
      if (block == "parallel") {
        const double scale = variant == "parallel_mean" ? 0.5 : 1.0;
        h = h + scale * (att + ref_ffn(*blk.feed_forward(), "silu", ln(h, pre + "feed_forward_norm").to(at::kFloat)));
      } else {
        h = h + att;
        h = h + ref_ffn(*blk.feed_forward(), "silu", ln(h, pre + "feed_forward_norm").to(at::kFloat));
      }
    }
    auto ref = at::matmul(ln(h, "lm_head.norm"), model.embeddings().to(at::kDouble).t());
    EXPECT_LT(max_diff(logits, ref), 1e-4) << variant;
  }
  const std::string tail = R"(, "attention": {"n_heads": 4}, "feed_forward": {"hidden_size": 8}, "layer_norm": {}}})";
  olm::testing::expect_error([&] {
    olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 1, "lm_head": {},
      "block": {"name": "parallel", "parallel_merge": "max")" + tail);
  }, olm::ErrorCode::kInvalidConfig, "block.parallel_merge: unknown value 'max'");
  olm::testing::expect_error([&] {
    olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 1, "lm_head": {},
      "block": {"parallel_merge": "mean")" + tail);
  }, olm::ErrorCode::kInvalidConfig, "block.parallel_merge: only allowed with block.name \"parallel\" (got 'default')");
  olm::testing::expect_error([] {
    olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 1, "lm_head": {},
      "block": {"attention": {"n_heads": 4}, "feed_forward": {"hidden_size": 8, "ff_multiplier": 2.0}, "layer_norm": {}}})");
  }, olm::ErrorCode::kInvalidConfig, "block.feed_forward: give hidden_size or ff_multiplier, not both");
}

// OLMo-core's cu_doc_lens -> position inside the document, and every rule it checks.
TEST(Documents, PositionsFromCumulativeLengths) {
  auto cu = at::tensor(std::vector<int32_t>{0, 5, 12, 15, 19, 24}, at::kInt);
  auto pos = olm::nn::document_positions(cu, 2, 12);
  auto want = at::tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6,
                                              0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4}, at::kLong).view({2, 12});
  EXPECT_TRUE(at::equal(pos, want));
  // Empty documents (repeated boundaries) are harmless, as in bucketize.
  auto dup = at::tensor(std::vector<int64_t>{0, 5, 5, 12, 15, 19, 24}, at::kLong);
  EXPECT_TRUE(at::equal(olm::nn::document_positions(dup, 2, 12), want));
  auto expect_error = [](const at::Tensor& c, int64_t max_doc_len, const std::string& needle) {
    try {
      olm::nn::document_positions(c, 2, 12, max_doc_len);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const olm::Error& e) {
      EXPECT_EQ(e.code(), olm::ErrorCode::kInvalidArgument);
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
  };
  auto i64 = [](std::vector<int64_t> v) { return at::tensor(v, at::kLong); };
  expect_error(i64({1, 12, 24}), 0, "start at 0");
  expect_error(i64({0, 12, 20}), 0, "end at batch * seq_len = 24");
  expect_error(i64({0, 13, 12, 24}), 0, "non-decreasing");
  expect_error(i64({0, 10, 24}), 0, "every row must start a document");
  expect_error(i64({0, 24}).to(at::kFloat), 0, "int32 or int64");
  expect_error(i64({0}), 0, "at least 2 elements");
  expect_error(cu, 6, "max_doc_len (6) is less than the longest document (7)");
  EXPECT_NO_THROW(olm::nn::document_positions(cu, 2, 12, 7));
}

// A packed batch with cu_doc_lens gives each document the logits of a separate forward over
// it alone: the same float32 operations on different shapes, so agreement is at float32
// rounding (logits ~1-10: 1e-5).
TEST(Documents, PackedForwardEqualsSeparateDocuments) {
  struct Case {
    std::string attention, rope, top;
  };
  for (const auto& c : std::vector<Case>{{"", "", ""}, {R"(, "backend": "explicit")", "", ""},
                                         {R"(, "sliding_window": {"pattern": [3]})", "", ""},
                                         {R"(, "softcap": 2.0)", "", ""},
                                         {R"(, "alibi": true)", "", ""},
                                         {R"(, "alibi": true, "backend": "explicit")", "", ""},
                                         {"", R"(, "interleaved": true, "xpos_scale_base": 16)", ""},
                                         {"", R"(, "scaling": {"name": "dynamic_ntk", "factor": 2, "old_context_len": 4})", ""},
                                         {"", "", R"(, "position_embedding": {"name": "learned", "max_sequence_length": 12})"},
                                         {"", "", R"(, "position_embedding": {"name": "sinusoidal"}, "tie_word_embeddings": true)"}}) {
    const std::string extra = c.attention + c.rope + c.top;
    olm::Model model(doc_config(c.attention, c.rope, c.top), "cpu", {});
    randomize(model.module(), 71);
    auto g = gen(72);
    auto ids = at::randint(40, {2, 12}, g, at::kLong);
    auto cu = at::tensor(std::vector<int32_t>{0, 5, 12, 15, 19, 24}, at::kInt);
    auto packed = model.forward(ids, 0, cu, 7);
    auto plain = model.forward(ids, 0);
    double worst = 0;
    for (auto [s, e] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 12}, {12, 15}, {15, 19}, {19, 24}}) {
      const int64_t b = s / 12, t0 = s % 12, n = e - s;
      auto alone = model.forward(ids.select(0, b).slice(0, t0, t0 + n).unsqueeze(0), 0);
      worst = std::max(worst, max_diff(packed.select(0, b).slice(0, t0, t0 + n).unsqueeze(0), alone));
    }
    EXPECT_LT(worst, 1e-5) << extra;
    // The first document of each row sees what it saw unmasked (unless dynamic NTK's base,
    // which follows the length, differs); later ones differ.
    if (c.rope.find("dynamic_ntk") == std::string::npos)
      EXPECT_LT(max_diff(packed.select(0, 0).slice(0, 0, 5), plain.select(0, 0).slice(0, 0, 5)), 1e-5) << extra;
    EXPECT_GT(max_diff(packed.select(0, 0).slice(0, 5), plain.select(0, 0).slice(0, 5)), 1e-2) << extra;
    // The loss takes the same inputs: ce over the packed logits.
    olm::nn::LossOptions lo;
    lo.return_logits = true;
    auto labels = ids.roll(-1, 1);
    auto out = model.loss(ids, labels, lo, cu, 0);
    EXPECT_LT(max_diff(*out.logits, packed), 1e-6);
    auto ce = at::cross_entropy_loss(packed.view({-1, 40}).to(at::kDouble), labels.view({-1}));
    EXPECT_NEAR(out.loss.item<double>(), ce.item<double>(), 1e-5);
  }
  olm::Model model(doc_config(""), "cpu", {});
  EXPECT_THROW(model.forward(at::ones({2, 12}, at::kLong), 0, at::tensor(std::vector<int64_t>{0, 24}, at::kLong), -1),
               olm::Error);
}

TEST(Positions, SinusoidalTableMatchesFloat64) {
  auto pe = olm::nn::sinusoidal_positions(at::arange(40, at::kLong), 10);
  ASSERT_EQ(pe.sizes(), (std::vector<int64_t>{40, 10}));
  for (int64_t p : {0, 1, 17, 39})
    for (int64_t i = 0; i < 5; ++i) {
      const double angle = static_cast<double>(p) / std::pow(10000.0, 2.0 * i / 10);
      EXPECT_NEAR(pe[p][2 * i].item<double>(), std::sin(angle), 1e-5) << p << " " << i;
      EXPECT_NEAR(pe[p][2 * i + 1].item<double>(), std::cos(angle), 1e-5) << p << " " << i;
    }
}

}  // namespace
