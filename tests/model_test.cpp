// core/model.cpp: token checks, input positions, KV-cache continuation and tied embeddings in safetensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model.h"
#include "nn/reference.h"

using ::testing::HasSubstr;
using namespace olm::testing;

namespace {

TEST(Model, RejectsBadTokenInputs) {
  olm::Model model(small_config("default", false), "cpu", {});
  auto expect_error = [&](const at::Tensor& ids, const std::string& needle) {
    try {
      model.forward(ids, 0);
      FAIL() << "expected an error mentioning " << needle;
    } catch (const olm::Error& e) {
      EXPECT_EQ(e.code(), olm::ErrorCode::kInvalidArgument);
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
  };
  expect_error(at::tensor(std::vector<int64_t>{1, 40}, at::kLong).view({1, 2}), "value 40 is outside the vocabulary");
  expect_error(at::tensor(std::vector<int64_t>{-1, 0}, at::kLong).view({1, 2}), "value -1");
  expect_error(at::ones({1, 2}, at::kFloat), "int32 or int64");
  expect_error(at::ones({2}, at::kLong), "(batch, seq_len)");
  expect_error(at::ones({1, 2, 3}, at::kLong), "(batch, seq_len)");
  expect_error(at::ones({0, 3}, at::kLong), "positive");
  auto ids = at::ones({1, 4}, at::kInt);
  EXPECT_TRUE(at::equal(model.forward(ids, 0), model.forward(ids.to(at::kLong), 0)));
  EXPECT_EQ(model.forward(ids, 2).size(1), 2);
}

// Learned and sinusoidal input positions, and a tied LM head, through the whole model
// against a float64 re-run: h = emb[ids] + P[pos], default pre-norm blocks without RoPE,
// logits = norm(h) E^T for the tied head.
TEST(Positions, ModelWithInputPositionsAndTiedHeadMatchesFloat64) {
  for (const std::string top : {std::string(R"(, "position_embedding": {"name": "learned", "max_sequence_length": 10})"),
                                std::string(R"(, "position_embedding": {"name": "sinusoidal"}, "tie_word_embeddings": true)")}) {
    auto config = olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 2)" + top + R"(,
        "block": {"attention": {"n_heads": 4, "bias": false}, "feed_forward": {"hidden_size": 32, "bias": false},
          "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
        "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
    const bool tied = config.spec().tie_word_embeddings;
    olm::Model model(config, "cpu", {});
    EXPECT_EQ(model.num_params(), config.num_params().total);
    randomize(model.module(), 121);
    auto params = model.module().named_parameters();
    auto P = [&](const std::string& name) -> at::Tensor* {
      for (auto& p : params)
        if (p.name == name) return p.tensor;
      return nullptr;
    };
    EXPECT_EQ(P("lm_head.w_out.weight") == nullptr, tied);
    EXPECT_EQ(P("position_embeddings.weight") != nullptr, !tied);
    auto g = gen(122);
    auto ids = at::randint(40, {2, 9}, g, at::kLong);
    auto logits = model.forward(ids, 0);
    auto h = model.module().embeddings().to(at::kDouble).index_select(0, ids.flatten()).view({2, 9, 16});
    if (tied) {
      auto pos = at::zeros({9, 16}, at::kDouble);
      for (int64_t p = 0; p < 9; ++p)
        for (int64_t i = 0; i < 8; ++i) {
          pos[p][2 * i] = std::sin(p / std::pow(10000.0, 2.0 * i / 16));
          pos[p][2 * i + 1] = std::cos(p / std::pow(10000.0, 2.0 * i / 16));
        }
      h = h + pos;
    } else {
      h = h + P("position_embeddings.weight")->to(at::kDouble).slice(0, 0, 9);
    }
    for (int64_t i = 0; i < 2; ++i) {
      const std::string pre = "blocks." + std::to_string(i) + ".";
      auto& blk = *model.module().blocks()[static_cast<size_t>(i)];
      const auto& spec = config.spec().blocks[static_cast<size_t>(i)];
      h = h + ref_attention(blk.attention(), spec.attention, ref_rms(h, P(pre + "attention_norm.weight"), 1e-6).to(at::kFloat));
      h = h + ref_ffn(*blk.feed_forward(), "silu", ref_rms(h, P(pre + "feed_forward_norm.weight"), 1e-6).to(at::kFloat));
    }
    auto* w_out = tied ? &model.module().embeddings() : P("lm_head.w_out.weight");
    auto ref = at::matmul(ref_rms(h, P("lm_head.norm.weight"), 1e-6), w_out->to(at::kDouble).t());
    EXPECT_LT(max_diff(logits, ref), 1e-4) << top;
    // Decoding with a KV cache continues the positions.
    olm::Model& m = model;
    at::NoGradGuard ng;
    auto caches = m.module().make_kv_caches(2, 9);
    m.module().forward(ids.slice(1, 0, 5), 0, &caches);
    auto tail = m.module().forward(ids.slice(1, 5), 0, &caches);
    EXPECT_LT(max_diff(tail, logits.slice(1, 5)), 1e-5) << top;
  }
  // Learned positions stop at max_sequence_length.
  olm::Model model(doc_config("", "", R"(, "position_embedding": {"name": "learned", "max_sequence_length": 4})"), "cpu", {});
  EXPECT_THROW(model.forward(at::ones({1, 5}, at::kLong), 0), olm::Error);
  EXPECT_NO_THROW(model.forward(at::ones({1, 4}, at::kLong), 0));
}

// A KV cache continues ALiBi distances and xPos/interleaved RoPE positions.
TEST(Positions, KvCacheContinuesAlibiAndXpos) {
  for (const auto& [attention, rope] : std::vector<std::pair<std::string, std::string>>{
           {R"(, "alibi": true)", ""}, {R"(, "alibi": true, "backend": "explicit")", ""},
           {"", R"(, "interleaved": true, "xpos_scale_base": 16)"}}) {
    olm::Model model(doc_config(attention, rope), "cpu", {});
    randomize(model.module(), 131);
    auto ids = at::randint(40, {2, 9}, gen(132), at::kLong);
    auto full = model.forward(ids, 0);
    at::NoGradGuard ng;
    auto caches = model.module().make_kv_caches(2, 9);
    model.module().forward(ids.slice(1, 0, 6), 0, &caches);
    auto tail = model.module().forward(ids.slice(1, 6), 0, &caches);
    EXPECT_LT(max_diff(tail, full.slice(1, 6)), 1e-5) << attention << rope;
  }
}

// Tied embeddings in safetensors: written under both OLMo-core names, read back with or
// without the second, refused when the two differ.
TEST(Model, TiedEmbeddingsInSafetensors) {
  auto config = doc_config("", "", R"(, "tie_word_embeddings": true)");
  olm::Model model(config, "cpu", {});
  randomize(model.module(), 141);
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/olm_tied.safetensors";
  model.save_safetensors(path);
  olm::io::SafetensorsFile file(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& e : file.entries()) tensors[e.name] = file.read(e);
  ASSERT_TRUE(tensors.count("lm_head.w_out.weight"));
  EXPECT_TRUE(tensors["lm_head.w_out.weight"].equal(tensors["embeddings.weight"]));
  olm::Model loaded(config, "cpu", {});
  loaded.load_safetensors(path);
  auto ids = at::randint(40, {1, 6}, gen(142), at::kLong);
  EXPECT_TRUE(loaded.forward(ids, 0).equal(model.forward(ids, 0)));
  // Without the second name: fine. With a different second tensor: a mismatch error.
  std::vector<std::pair<std::string, at::Tensor>> without, differing;
  for (auto& [name, t] : tensors) {
    if (name != "lm_head.w_out.weight") without.emplace_back(name, t);
    differing.emplace_back(name, name == "lm_head.w_out.weight" ? t + 1 : t);
  }
  olm::io::save_safetensors(dir + "/olm_tied_one.safetensors", without);
  olm::io::save_safetensors(dir + "/olm_tied_bad.safetensors", differing);
  olm::Model other(config, "cpu", {});
  other.load_safetensors(dir + "/olm_tied_one.safetensors");
  EXPECT_TRUE(other.forward(ids, 0).equal(model.forward(ids, 0)));
  try {
    other.load_safetensors(dir + "/olm_tied_bad.safetensors");
    ADD_FAILURE() << "a file whose tied tensors differ must be refused";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), olm::ErrorCode::kMismatch);
    EXPECT_THAT(e.what(), HasSubstr("tie_word_embeddings"));
  }
}

}  // namespace
