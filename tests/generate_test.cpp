// KV-cache decoding and sampling (core/generate.h, the cache in core/nn/kv_cache.h).
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "core/generate.h"

namespace {

olm::Config tiny_config(const std::string& block = "reordered_norm", int n_kv_heads = 2,
                        const std::string& attention_extra = "") {
  const std::string json = R"({"d_model": 32, "vocab_size": 50, "n_layers": 2,
    "block": {"name": ")" + block + R"(", "attention": {"n_heads": 4, "n_kv_heads": )" +
                           std::to_string(n_kv_heads) + R"(, "bias": false, "rope": {"theta": 10000},
      "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})" + attention_extra + R"(},
      "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false},
    "init_seed": 3})";
  return olm::Config::from_json(json);
}

// Feeding a sequence through the cache in chunks of any size gives the logits of one full
// forward at every position. float32; the only difference is SDPA's summation order over
// keys, so 1e-5 absolute on logits of magnitude ~1 is generous.
TEST(KVCache, ChunkedDecodingEqualsFullForward) {
  for (const auto& block : {"default", "reordered_norm"}) {
    for (int kv : {1, 2, 4}) {
      olm::Model model(tiny_config(block, kv), "cpu", {});
      auto& module = model.module();
      c10::InferenceMode guard;
      at::Generator gen = at::detail::createCPUGenerator(7);
      auto ids = at::randint(50, {2, 13}, gen, at::kLong);
      auto full = module.forward(ids);
      for (int64_t chunk : {1, 3, 13}) {
        auto caches = module.make_kv_caches(2, 13);
        std::vector<at::Tensor> pieces;
        for (int64_t start = 0; start < 13; start += chunk) {
          const int64_t end = std::min<int64_t>(13, start + chunk);
          pieces.push_back(module.forward(ids.slice(1, start, end), 0, &caches));
        }
        auto cached = at::cat(pieces, 1);
        EXPECT_LT((cached - full).abs().max().item<double>(), 1e-5)
            << "block " << block << " kv " << kv << " chunk " << chunk;
      }
    }
  }
}

// The same with sliding windows (smaller than the sequence, so cached keys fall out of view)
// and attention gates.
TEST(KVCache, SlidingWindowAndGatesEqualFullForward) {
  const std::string extra = R"(, "gate": {"granularity": "elementwise"},
      "sliding_window": {"pattern": [3, -1], "force_full_attention_on_first_layer": false})";
  for (const auto& block : {"default", "peri_norm", "default_scaled"}) {
    olm::Model model(tiny_config(block, 2, extra), "cpu", {});
    auto& module = model.module();
    c10::InferenceMode guard;
    at::Generator gen = at::detail::createCPUGenerator(8);
    auto ids = at::randint(50, {1, 11}, gen, at::kLong);
    auto full = module.forward(ids);
    for (int64_t chunk : {1, 4}) {
      auto caches = module.make_kv_caches(1, 11);
      std::vector<at::Tensor> pieces;
      for (int64_t start = 0; start < 11; start += chunk)
        pieces.push_back(module.forward(ids.slice(1, start, std::min<int64_t>(11, start + chunk)), 0, &caches));
      EXPECT_LT((at::cat(pieces, 1) - full).abs().max().item<double>(), 1e-5) << block << " chunk " << chunk;
    }
  }
}

TEST(Generate, GreedyWithAndWithoutCacheAgree) {
  olm::Model model(tiny_config(), "cpu", {});
  olm::GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 20;
  auto prompt = at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong);
  auto cached = olm::generate(model, prompt, o);
  o.use_kv_cache = false;
  auto uncached = olm::generate(model, prompt, o);
  EXPECT_EQ(cached, uncached);
  EXPECT_EQ(cached.size(), 20u);
}

TEST(Generate, SeedDeterminesSamplesAndStopTokensEnd) {
  olm::Model model(tiny_config(), "cpu", {});
  olm::GenerateOptions o;
  o.max_new_tokens = 30;
  o.temperature = 1.5;
  o.seed = 11;
  auto prompt = at::tensor(std::vector<int64_t>{5, 6}, at::kLong);
  auto a = olm::generate(model, prompt, o);
  auto b = olm::generate(model, prompt, o);
  EXPECT_EQ(a, b);
  o.seed = 12;
  EXPECT_NE(a, olm::generate(model, prompt, o));
  // Stop at the first occurrence of a token that appears in the seed-11 sample.
  o.seed = 11;
  o.stop_tokens = {a[5]};
  auto stopped = olm::generate(model, prompt, o);
  const auto first = std::find(a.begin(), a.end(), a[5]) - a.begin();
  EXPECT_EQ(static_cast<int64_t>(stopped.size()), first + 1);
  EXPECT_EQ(stopped.back(), a[5]);
  // The streaming callback sees every token and can stop generation.
  std::vector<int64_t> seen;
  o.stop_tokens.clear();
  o.on_token = [&](int64_t t) {
    seen.push_back(t);
    return seen.size() < 4;
  };
  auto streamed = olm::generate(model, prompt, o);
  EXPECT_EQ(seen, streamed);
  EXPECT_EQ(streamed.size(), 4u);
}

TEST(Sampling, TopKAndTopPRestrictTheSupport) {
  // logits favour token 3, then 1, then the rest.
  auto logits = at::tensor(std::vector<double>{0.0, 2.0, 0.1, 3.0, -1.0}, at::kDouble);
  at::Generator gen = at::detail::createCPUGenerator(0);
  olm::GenerateOptions o;
  o.temperature = 1.0;
  o.top_k = 2;
  for (int i = 0; i < 200; ++i) {
    const auto t = olm::sample_token(logits, o, gen);
    EXPECT_TRUE(t == 3 || t == 1) << t;
  }
  // softmax mass of token 3 is ~0.66: top_p 0.5 keeps only it.
  o.top_k = 0;
  o.top_p = 0.5;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(olm::sample_token(logits, o, gen), 3);
  // top_p 0.9 keeps {3, 1}: mass before token 1 is 0.66 < 0.9, before the third 0.9+.
  o.top_p = 0.9;
  for (int i = 0; i < 200; ++i) {
    const auto t = olm::sample_token(logits, o, gen);
    EXPECT_TRUE(t == 3 || t == 1) << t;
  }
  o.temperature = 0;
  EXPECT_EQ(olm::sample_token(logits, o, gen), 3);
}

TEST(Generate, RejectsBadArguments) {
  olm::Model model(tiny_config(), "cpu", {});
  olm::GenerateOptions o;
  auto prompt = at::tensor(std::vector<int64_t>{1}, at::kLong);
  auto expect_error = [&](const olm::GenerateOptions& opts, const at::Tensor& p, const std::string& what) {
    try {
      olm::generate(model, p, opts);
      FAIL() << "expected an error mentioning " << what;
    } catch (const olm::Error& e) {
      EXPECT_EQ(e.code(), olm::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  auto bad = o;
  bad.temperature = -1;
  expect_error(bad, prompt, "temperature");
  bad = o;
  bad.top_p = 0;
  expect_error(bad, prompt, "top_p");
  bad = o;
  bad.stop_tokens = {50};
  expect_error(bad, prompt, "stop_tokens");
  expect_error(o, at::tensor(std::vector<int64_t>{50}, at::kLong), "prompt: value 50 is outside the vocabulary");
  expect_error(o, at::empty({0}, at::kLong), "prompt");
  // A KV cache that could never fit is refused up front, not discovered by the OOM killer.
  olm::Model wide(olm::preset("olmo2_30M", 64), "cpu", {});
  auto huge = o;
  huge.max_new_tokens = 1 << 24;
  try {
    olm::generate(wide, prompt, huge);
    FAIL() << "expected an out-of-memory error";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), olm::ErrorCode::kOutOfMemory);
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
}

}  // namespace
