// core/nn components against float64 re-computations written here, independently of the
// code under test: explicit loops or double-precision ATen ops on the modules' parameters.
//
// Tolerances: the components compute in float32 (RMSNorm/RoPE/loss internally), inputs and
// weights are O(1), and sums run over at most a few hundred terms, so float32 rounding stays
// below ~1e-5 relative; we allow 1e-5 absolute on normalized outputs and 1e-4 on logits after
// several layers.
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "test_util.h"
#include "core/io/safetensors.h"
#include "core/model.h"
#include "core/nn/fused_linear_loss.h"
#include "core/nn/transformer.h"
#include "kernels/rms_norm.h"

using ::testing::HasSubstr;

namespace {

at::Generator gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  auto g = gen(seed);
  return at::randn(shape, g, at::kFloat);
}

using olm::testing::max_diff;

olm::LayerNormSpec norm_spec(const std::string& name, bool bias, double eps = 1e-5) {
  olm::LayerNormSpec s;
  s.name = name;
  s.bias = bias;
  s.eps = eps;
  return s;
}

// Gives every parameter of a module distinct random values (weights and biases).
void randomize(olm::nn::Module& m, uint64_t seed) {
  at::NoGradGuard g;
  for (auto& p : m.named_parameters()) p.tensor->copy_(randn(p.tensor->sizes(), seed++) * 0.3);
}

// ---- references ------------------------------------------------------------------------

at::Tensor ref_rms(const at::Tensor& x, const at::Tensor* w, double eps) {
  auto xd = x.to(at::kDouble);
  auto out = at::empty_like(xd);
  const int64_t D = xd.size(-1);
  auto flat = xd.reshape({-1, D});
  auto oflat = out.view({-1, D});
  for (int64_t r = 0; r < flat.size(0); ++r) {
    double ss = 0;
    for (int64_t c = 0; c < D; ++c) ss += flat[r][c].item<double>() * flat[r][c].item<double>();
    const double inv = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t c = 0; c < D; ++c)
      oflat[r][c] = flat[r][c].item<double>() * inv * (w ? (*w)[c].item<double>() : 1.0);
  }
  return out;
}

at::Tensor ref_layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  auto xd = x.to(at::kDouble);
  auto mean = xd.mean(-1, true);
  auto var = (xd - mean).pow(2).mean(-1, true);
  return (xd - mean) / (var + eps).sqrt() * w.to(at::kDouble) + b.to(at::kDouble);
}

// Half-split RoPE at absolute positions start.., in float64: (B, T, H, D).
at::Tensor ref_rope(const at::Tensor& x, double theta, int64_t start) {
  auto xd = x.to(at::kDouble);
  auto out = xd.clone();
  const int64_t T = xd.size(1), D = xd.size(3), half = D / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(start + t) * std::pow(theta, -2.0 * i / D);
      const double c = std::cos(angle), s = std::sin(angle);
      auto a = xd.select(1, t).select(-1, i), bb = xd.select(1, t).select(-1, i + half);
      out.select(1, t).select(-1, i).copy_(a * c - bb * s);
      out.select(1, t).select(-1, i + half).copy_(bb * c + a * s);
    }
  return out;
}

at::Tensor dlinear(const at::Tensor& x, at::Tensor& w, at::Tensor* b) {
  auto y = at::matmul(x, w.to(at::kDouble).t());
  return b ? y + b->to(at::kDouble) : y;
}

// Press et al.'s ALiBi slopes written from the paper: 2^(-8 (h + 1) / p) for the largest power
// of two p <= n, then 2^(-4 (2k + 1) / p) (the odd slopes of 2p) for the other n - p heads.
std::vector<double> ref_alibi_slopes(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  std::vector<double> out;
  for (int64_t h = 0; h < p; ++h) out.push_back(std::pow(2.0, -8.0 * static_cast<double>(h + 1) / static_cast<double>(p)));
  for (int64_t k = 0; k < n - p; ++k) out.push_back(std::pow(2.0, -4.0 * static_cast<double>(2 * k + 1) / static_cast<double>(p)));
  return out;
}

// Causal softmax attention written out, with GQA head mapping h -> h / (H / Hkv) and, when
// spec.softcap is set, scores soft-capped as Gemma 2: cap * tanh(s / cap), then the ALiBi
// bias slope_h * (j - i) when spec.alibi is set.
at::Tensor ref_attention(olm::nn::Attention& att, const olm::AttentionSpec& spec, const at::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), H = spec.n_heads, Hkv = spec.n_kv_heads, D = spec.head_dim;
  auto xd = x.to(at::kDouble);
  auto q = dlinear(xd, att.w_q().weight(), att.w_q().bias());
  auto k = dlinear(xd, att.w_k().weight(), att.w_k().bias());
  auto v = dlinear(xd, att.w_v().weight(), att.w_v().bias());
  if (spec.clip_qkv) {
    q = q.clamp(-*spec.clip_qkv, *spec.clip_qkv);
    k = k.clamp(-*spec.clip_qkv, *spec.clip_qkv);
    v = v.clamp(-*spec.clip_qkv, *spec.clip_qkv);
  }
  auto params = att.named_parameters();
  auto find = [&](const std::string& name) -> at::Tensor* {
    for (auto& p : params)
      if (p.name == name) return p.tensor;
    return nullptr;
  };
  if (spec.qk_norm && !spec.use_head_qk_norm) {
    q = ref_rms(q, find("q_norm.weight"), spec.qk_norm->eps);
    k = ref_rms(k, find("k_norm.weight"), spec.qk_norm->eps);
  }
  q = q.view({B, T, H, D});
  k = k.view({B, T, Hkv, D});
  v = v.view({B, T, Hkv, D});
  if (spec.qk_norm && spec.use_head_qk_norm) {
    q = ref_rms(q, find("q_norm.weight"), spec.qk_norm->eps);
    k = ref_rms(k, find("k_norm.weight"), spec.qk_norm->eps);
  }
  if (spec.rope) {
    q = ref_rope(q, spec.rope->theta, 0);
    k = ref_rope(k, spec.rope->theta, 0);
  }
  auto out = at::zeros({B, T, H, D}, at::kDouble);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kv = h / (H / Hkv);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> scores(static_cast<size_t>(i + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          scores[static_cast<size_t>(j)] = (q[b][i][h] * k[b][j][kv]).sum().item<double>() * scale;
          if (spec.softcap) scores[static_cast<size_t>(j)] = *spec.softcap * std::tanh(scores[static_cast<size_t>(j)] / *spec.softcap);
          if (spec.alibi) scores[static_cast<size_t>(j)] += ref_alibi_slopes(H)[static_cast<size_t>(h)] * static_cast<double>(j - i);
          mx = std::max(mx, scores[static_cast<size_t>(j)]);
        }
        double z = 0;
        for (auto& s : scores) z += (s = std::exp(s - mx));
        auto acc = at::zeros({D}, at::kDouble);
        for (int64_t j = 0; j <= i; ++j) acc += v[b][j][kv] * (scores[static_cast<size_t>(j)] / z);
        out[b][i][h].copy_(acc);
      }
    }
  return dlinear(out.view({B, T, H * D}), att.w_out().weight(), att.w_out().bias());
}

// The activations' textbook formulas, in float64.
at::Tensor ref_activation(const std::string& name, const at::Tensor& a) {
  if (name == "silu" || name == "swish") return a / (1 + at::exp(-a));
  if (name == "gelu_tanh") return 0.5 * a * (1 + at::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a.pow(3))));
  if (name == "gelu") return 0.5 * a * (1 + at::erf(a / std::sqrt(2.0)));
  if (name == "relu") return a.clamp_min(0);
  if (name == "leaky_relu") return at::where(a > 0, a, 0.01 * a);
  if (name == "elu") return at::where(a > 0, a, at::exp(a) - 1);
  if (name == "selu") {
    const double alpha = 1.6732632423543772, scale = 1.0507009873554805;
    return scale * at::where(a > 0, a, alpha * (at::exp(a) - 1));
  }
  if (name == "mish") return a * at::tanh(at::log1p(at::exp(a)));
  if (name == "softplus") return at::log1p(at::exp(a));
  if (name == "tanh") return (at::exp(a) - at::exp(-a)) / (at::exp(a) + at::exp(-a));
  if (name == "sigmoid") return 1 / (1 + at::exp(-a));
  if (name == "softmax") return at::exp(a) / at::exp(a).sum(-1, true);
  if (name == "identity") return a;
  ADD_FAILURE() << "no reference for " << name;
  return a;
}

at::Tensor ref_ffn(olm::nn::FeedForward& ff, const std::string& activation, const at::Tensor& x) {
  auto xd = x.to(at::kDouble);
  auto h = ref_activation(activation, dlinear(xd, ff.w1().weight(), ff.w1().bias()));
  if (ff.w3()) h = h * dlinear(xd, ff.w3()->weight(), ff.w3()->bias());
  return dlinear(h, ff.w2().weight(), ff.w2().bias());
}

// ---- tests -----------------------------------------------------------------------------

TEST(Norms, RmsNormAndLayerNormMatchFloat64) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  auto x = randn({3, 5, 16}, 1) * 2 + 0.3;
  for (bool affine : {true, false}) {
    auto spec = norm_spec("rms", false, 1e-6);
    spec.elementwise_affine = affine;
    olm::nn::LayerNorm norm(16, spec, opts);
    randomize(norm, 7);
    auto params = norm.named_parameters();
    at::Tensor* w = params.empty() ? nullptr : params[0].tensor;
    EXPECT_LT(max_diff(norm.forward(x), ref_rms(x, w, 1e-6)), 1e-5) << "affine " << affine;
  }
  olm::nn::LayerNorm ln(16, norm_spec("default", true), opts);
  randomize(ln, 3);
  auto p = ln.named_parameters();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "weight");
  EXPECT_EQ(p[1].name, "bias");
  EXPECT_LT(max_diff(ln.forward(x), ref_layer_norm(x, *p[0].tensor, *p[1].tensor, 1e-5)), 1e-5);
  // bfloat16 in, bfloat16 out, float32 math inside: the result is the float64 answer rounded
  // to bfloat16 (relative spacing 2^-8).
  auto xb = x.to(at::kBFloat16);
  auto yb = ln.forward(xb);
  EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
  auto ref = ref_layer_norm(xb.to(at::kFloat), *p[0].tensor, *p[1].tensor, 1e-5);
  EXPECT_LT(((yb.to(at::kDouble) - ref).abs() / (ref.abs() + 1e-2)).max().item<double>(), 1.0 / 128);
  // The kernel's reference path equals the float64 definition.
  auto w = randn({16}, 9);
  EXPECT_LT(max_diff(olm::kernels::rms_norm_reference(x, w, 1e-5), ref_rms(x, &w, 1e-5)), 1e-5);
}

TEST(Rope, TablesAndRotationMatchFloat64) {
  olm::RoPESpec spec;
  spec.theta = 10000;
  auto cache = std::make_shared<olm::nn::BufferCache>();
  olm::nn::RotaryEmbedding rope(8, spec, cache);
  auto [sin, cos] = rope.tables(12, at::Device(at::kCPU));
  for (int64_t t : {0, 5, 11})
    for (int64_t i : {0, 2, 3}) {
      const double angle = t * std::pow(10000.0, -2.0 * i / 8);
      EXPECT_NEAR(sin[t][i].item<double>(), std::sin(angle), 2e-6);
      EXPECT_NEAR(cos[t][i + 4].item<double>(), std::cos(angle), 2e-6);
    }
  auto q = randn({2, 6, 3, 8}, 4), k = randn({2, 6, 1, 8}, 5);
  for (int64_t start : {0, 7}) {
    auto [qr, kr] = rope.apply(q, k, start);
    EXPECT_LT(max_diff(qr, ref_rope(q, 10000, start)), 1e-5) << "start " << start;
    EXPECT_LT(max_diff(kr, ref_rope(k, 10000, start)), 1e-5);
  }
  // Rotation preserves each pair's norm.
  auto [qr, kr] = rope.apply(q, k, 3);
  EXPECT_LT(max_diff(qr.norm(2, -1), q.norm(2, -1)), 1e-5);
}

// Gated (SwiGLU, GeGLU, ReGLU, LiGLU, GLU, ...) and classic feed-forwards with every
// registered activation.
TEST(FeedForward, EveryActivationGatedAndClassicMatchFloat64) {
  ASSERT_EQ(olm::activation_names().size(), 14u);
  for (const auto& act : olm::activation_names()) {
    for (const auto& name : {"default", "classic"}) {
      for (bool bias : {false, true}) {
        olm::FeedForwardSpec spec;
        spec.name = name;
        spec.hidden_size = 24;
        spec.bias = bias;
        spec.activation = act;
        olm::nn::FeedForward ff(16, spec, at::TensorOptions().dtype(at::kFloat));
        randomize(ff, 11);
        EXPECT_EQ(ff.named_parameters().size(), (std::string(name) == "default" ? 3u : 2u) * (bias ? 2 : 1));
        int64_t count = 0;
        for (auto& p : ff.named_parameters()) count += p.tensor->numel();
        EXPECT_EQ(count, spec.num_params(16)) << name;
        auto x = randn({2, 5, 16}, 12);
        EXPECT_LT(max_diff(ff.forward(x), ref_ffn(ff, act, x)), 1e-5) << act << " " << name << " bias " << bias;
      }
    }
  }
}

TEST(Attention, MhaGqaQkNormClipMatchExplicitSoftmax) {
  struct Case {
    int64_t heads, kv;
    bool qk_norm, head_norm, bias;
    std::optional<double> clip;
  };
  for (const auto& c : std::vector<Case>{{4, 4, false, false, true, std::nullopt},
                                         {4, 2, true, false, false, std::nullopt},
                                         {4, 1, true, true, false, 0.4},
                                         {2, 2, false, false, false, 0.2}}) {
    olm::AttentionSpec spec;
    spec.n_heads = c.heads;
    spec.n_kv_heads = c.kv;
    spec.head_dim = 16 / c.heads;
    spec.bias = c.bias;
    spec.clip_qkv = c.clip;
    olm::RoPESpec rope;
    rope.theta = 500000;
    spec.rope = rope;
    if (c.qk_norm) spec.qk_norm = norm_spec("rms", false, 1e-6);
    spec.use_head_qk_norm = c.head_norm;
    olm::nn::Attention att(16, spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(att, 21);
    auto x = randn({2, 7, 16}, 22);
    at::NoGradGuard g;
    EXPECT_LT(max_diff(att.forward(x), ref_attention(att, spec, x)), 1e-5)
        << "heads " << c.heads << " kv " << c.kv << " qk_norm " << c.qk_norm << " head " << c.head_norm;
  }
}

olm::Config small_config(const std::string& block, bool qk_norm) {
  std::string json = R"({"d_model": 16, "vocab_size": 40, "n_layers": 2, "block": {"name": ")" + block +
                     R"(", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000})" +
                     (qk_norm ? R"(, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})" : "") +
                     R"(}, "feed_forward": {"hidden_size": 32, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";
  return olm::Config::from_json(json);
}

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

TEST(Loss, CrossEntropyAndZLossMatchFloat64) {
  auto logits = randn({10, 7}, 41) * 3;
  auto labels = at::tensor(std::vector<int64_t>{1, 2, -100, 6, 0, -100, 3, 3, 5, 4}, at::kLong);
  auto ld = logits.to(at::kDouble);
  double ce_sum = 0, z_sum = 0;
  int n = 0;
  std::vector<double> ce_none, z_none;
  for (int64_t i = 0; i < 10; ++i) {
    const double lse = std::log(at::exp(ld[i]).sum().item<double>());
    const int64_t l = labels[i].item<int64_t>();
    const double ce = l == -100 ? 0.0 : lse - ld[i][l].item<double>();
    ce_none.push_back(ce);
    z_none.push_back(1e-3 * lse * lse);
    if (l != -100) {
      ce_sum += ce;
      z_sum += lse * lse;
      ++n;
    }
  }
  using olm::nn::LossReduction;
  auto [mean, zmean] = olm::nn::cross_entropy_loss(logits, labels, -100, LossReduction::kMean, 1e-3);
  EXPECT_NEAR(mean.item<double>(), ce_sum / n, 1e-5);
  EXPECT_NEAR(zmean->item<double>(), 1e-3 * z_sum / n, 1e-6);
  auto [sum, zsum] = olm::nn::cross_entropy_loss(logits, labels, -100, LossReduction::kSum, 1e-3);
  EXPECT_NEAR(sum.item<double>(), ce_sum, 1e-4);
  EXPECT_NEAR(zsum->item<double>(), 1e-3 * z_sum, 1e-5);
  auto [none, znone] = olm::nn::cross_entropy_loss(logits, labels, -100, LossReduction::kNone, 1e-3);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_NEAR(none[i].item<double>(), ce_none[static_cast<size_t>(i)], 1e-5);
    // As OLMo-core: the 'none' z-loss keeps ignored positions.
    EXPECT_NEAR(znone->operator[](i).item<double>(), z_none[static_cast<size_t>(i)], 1e-5);
  }
  auto [plain, no_z] = olm::nn::cross_entropy_loss(logits, labels, -100, LossReduction::kMean, std::nullopt);
  EXPECT_FALSE(no_z.has_value());
  EXPECT_EQ(plain.item<double>(), mean.item<double>());
}


// The head's loss in float64 from (N, V) logits: mean cross-entropy over the labels that are
// not -100, and OLMo-core's z-loss (multiplier * mean logsumexp^2) over the same.
std::pair<at::Tensor, at::Tensor> mean_ce_and_z_loss64(const at::Tensor& logits64, const at::Tensor& labels,
                                                       double z_multiplier) {
  auto flat = labels.view({-1});
  auto mask = flat.ne(-100);
  auto lse64 = logits64.logsumexp(-1);
  auto ce64 = ((lse64 - logits64.gather(1, flat.clamp_min(0).unsqueeze(1)).squeeze(1)) * mask).sum() / mask.sum();
  auto z64 = z_multiplier * (lse64.pow(2) * mask).sum() / mask.sum();
  return {ce64, z64};
}

TEST(Loss, FusedLinearEqualsFloat64InValueAndGradients) {
  // A vocabulary large enough that the fused loss works in several chunks (the last partial).
  const int64_t d = 16, V = 300000, B = 2, T = 50;
  ASSERT_LT(olm::nn::fused_linear_chunk_rows(V), B * T / 3);
  olm::LMHeadSpec spec;
  olm::LayerNormSpec norm;
  norm.name = "rms";
  norm.eps = 1e-6;
  norm.bias = false;
  spec.layer_norm = norm;
  spec.bias = true;
  spec.loss_implementation = "fused_linear";
  const auto options = at::TensorOptions().dtype(at::kFloat);
  olm::nn::LMHead head(d, V, spec, options);
  auto params = head.named_parameters();  // norm.weight, w_out.weight, w_out.bias
  ASSERT_EQ(params.size(), 3u);
  uint64_t seed = 3;
  for (auto& p : params) {
    *p.tensor = (randn(p.tensor->sizes(), seed++) * 0.5 + (p.name == "norm.weight" ? 1.0 : 0.0)).set_requires_grad(true);
  }
  auto h = (randn({B, T, d}, 11) * 2).set_requires_grad(true);
  auto labels = at::randint(V, {B, T}, gen(5), at::TensorOptions().dtype(at::kLong));
  labels.index_put_({0, at::indexing::Slice(0, 7)}, -100);
  labels.index_put_({1, 30}, -100);

  // The reference: the same head in float64, plain ATen ops, autograd.
  std::vector<at::Tensor> p64;
  for (auto& p : params) p64.push_back(p.tensor->detach().to(at::kDouble).set_requires_grad(true));
  auto h64 = h.detach().to(at::kDouble).set_requires_grad(true);
  auto x64 = h64 * (h64.pow(2).mean(-1, true) + 1e-6).rsqrt() * p64[0];
  auto logits64 = at::linear(x64, p64[1], p64[2]).view({-1, V});
  const auto [ce64, z64] = mean_ce_and_z_loss64(logits64, labels, 1e-4);
  (ce64 + z64).backward();

  olm::nn::LossOptions lo;
  lo.z_loss_multiplier = 1e-4;
  auto out = head.loss(h, labels, lo);
  out.loss.backward();
  // Float32 sums over ~100 rows of 300000-term logsumexps: 1e-5 relative is ~100 ulp headroom.
  EXPECT_NEAR(out.ce_loss.item<double>(), ce64.item<double>(), 1e-5 * ce64.item<double>());
  EXPECT_NEAR(out.z_loss->item<double>(), z64.item<double>(), 1e-5 * z64.item<double>());
  auto max_rel = [](const at::Tensor& got, const at::Tensor& want) {
    return ((got.to(at::kDouble) - want).abs().max() / want.abs().max()).item<double>();
  };
  EXPECT_LT(max_rel(h.grad(), h64.grad()), 1e-5);
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_LT(max_rel(params[i].tensor->grad(), p64[i].grad()), 1e-5) << params[i].name;

  // The sum and none reductions, and the logits when asked for, equal the default head's.
  olm::LMHeadSpec plain_spec = spec;
  plain_spec.loss_implementation = "default";
  olm::nn::LMHead plain(d, V, plain_spec, options);
  auto plain_params = plain.named_parameters();
  for (size_t i = 0; i < params.size(); ++i) *plain_params[i].tensor = params[i].tensor->detach();
  for (auto reduction : {olm::nn::LossReduction::kSum, olm::nn::LossReduction::kNone}) {
    lo.reduction = reduction;
    lo.return_logits = reduction == olm::nn::LossReduction::kNone;
    at::NoGradGuard no_grad;
    auto fused = head.loss(h, labels, lo);
    auto ref = plain.loss(h, labels, lo);
    EXPECT_TRUE(at::allclose(fused.loss, ref.loss, 1e-5, 1e-5));
    EXPECT_TRUE(at::allclose(fused.z_loss.value(), ref.z_loss.value(), 1e-5, 1e-6));
    if (lo.return_logits) EXPECT_TRUE(at::equal(fused.logits.value(), ref.logits.value()));
  }
  // Without a bias or a final norm, gradients too equal the default head's.
  olm::LMHeadSpec bare;
  bare.bias = false;
  bare.loss_implementation = "fused_linear";
  olm::nn::LMHead fused_bare(d, 1000, bare, options);
  bare.loss_implementation = "default";
  olm::nn::LMHead plain_bare(d, 1000, bare, options);
  auto w = randn({1000, d}, 21) * 0.3;
  *fused_bare.named_parameters()[0].tensor = w.clone().set_requires_grad(true);
  *plain_bare.named_parameters()[0].tensor = w.clone().set_requires_grad(true);
  auto small_labels = at::remainder(labels, 1000).masked_fill(labels.eq(-100), -100);
  std::vector<at::Tensor> grads;
  for (auto* m : {&fused_bare, &plain_bare}) {
    auto x = h.detach().clone().set_requires_grad(true);
    olm::nn::LossOptions o;
    m->loss(x, small_labels, o).loss.backward();
    grads.push_back(x.grad());
    grads.push_back(m->named_parameters()[0].tensor->grad());
  }
  EXPECT_TRUE(at::allclose(grads[0], grads[2], 1e-5, 1e-7));
  EXPECT_TRUE(at::allclose(grads[1], grads[3], 1e-5, 1e-7));
}

// The normalized (nGPT) head under the fused loss: logits (sz * sqrt(d)) * (x w^T), each
// chunk scaled in the forward and in the recomputing backward, against the same head in
// float64 and against the default loss, in value and in the gradients of the hidden states,
// w_out and sz.
TEST(Loss, FusedLinearWithNormalizedHeadEqualsFloat64) {
  const int64_t d = 16, V = 120000, B = 2, T = 50;
  ASSERT_LT(olm::nn::fused_linear_chunk_rows(V), B * T);  // two chunks, the last partial
  olm::LMHeadSpec spec;
  spec.normalized = true;
  spec.bias = false;
  spec.loss_implementation = "fused_linear";
  const auto options = at::TensorOptions().dtype(at::kFloat);
  olm::nn::LMHead head(d, V, spec, options);
  auto params = head.named_parameters();  // sz, w_out.weight
  ASSERT_EQ(params.size(), 2u);
  if (params[0].name == "sz") std::swap(params[0], params[1]);
  ASSERT_EQ(params[0].name, "w_out.weight");
  ASSERT_EQ(params[1].name, "sz");
  // Unit rows as nGPT keeps them; sz spread around its init 1/sqrt(d) so every entry's scale
  // (and its gradient) differs.
  *params[0].tensor = olm::nn::l2_normalize(randn({V, d}, 31), -1).set_requires_grad(true);
  *params[1].tensor = ((1 + 0.5 * randn({V}, 32)) / std::sqrt(static_cast<double>(d))).set_requires_grad(true);
  auto h = olm::nn::l2_normalize(randn({B, T, d}, 33), -1).set_requires_grad(true);
  auto labels = at::randint(V, {B, T}, gen(34), at::TensorOptions().dtype(at::kLong));
  labels.index_put_({0, at::indexing::Slice(0, 5)}, -100);

  auto w64 = params[0].tensor->detach().to(at::kDouble).set_requires_grad(true);
  auto sz64 = params[1].tensor->detach().to(at::kDouble).set_requires_grad(true);
  auto h64 = h.detach().to(at::kDouble).set_requires_grad(true);
  auto logits64 = (sz64 * std::sqrt(static_cast<double>(d)) * at::linear(h64, w64)).view({-1, V});
  const auto [ce64, z64] = mean_ce_and_z_loss64(logits64, labels, 1e-4);
  (ce64 + z64).backward();

  olm::nn::LossOptions lo;
  lo.z_loss_multiplier = 1e-4;
  auto out = head.loss(h, labels, lo);
  out.loss.backward();
  auto max_rel = [](const at::Tensor& got, const at::Tensor& want) {
    return ((got.to(at::kDouble) - want.to(at::kDouble)).abs().max() / want.to(at::kDouble).abs().max()).item<double>();
  };
  const double ce_rel = std::abs(out.ce_loss.item<double>() - ce64.item<double>()) / ce64.item<double>();
  const double z_rel = std::abs(out.z_loss->item<double>() - z64.item<double>()) / z64.item<double>();
  const double gh = max_rel(h.grad(), h64.grad()), gw = max_rel(params[0].tensor->grad(), w64.grad()),
               gs = max_rel(params[1].tensor->grad(), sz64.grad());
  std::printf("[fused nGPT] relative to float64: ce %.3g, z %.3g, grad h %.3g, grad w_out %.3g, grad sz %.3g\n",
              ce_rel, z_rel, gh, gw, gs);
  // As the plain fused test: float32 logsumexps over 120000 terms, 1e-5 relative is ample.
  EXPECT_LT(ce_rel, 1e-5);
  EXPECT_LT(z_rel, 1e-5);
  EXPECT_LT(gh, 1e-5);
  EXPECT_LT(gw, 1e-5);
  EXPECT_LT(gs, 1e-5);

  // The default loss on the same parameters: the same loss and gradients, and with
  // return_logits the same (scaled) logits.
  olm::LMHeadSpec plain_spec = spec;
  plain_spec.loss_implementation = "default";
  olm::nn::LMHead plain(d, V, plain_spec, options);
  auto plain_params = plain.named_parameters();
  if (plain_params[0].name == "sz") std::swap(plain_params[0], plain_params[1]);
  for (size_t i = 0; i < params.size(); ++i)
    *plain_params[i].tensor = params[i].tensor->detach().clone().set_requires_grad(true);
  auto h2 = h.detach().clone().set_requires_grad(true);
  auto ref = plain.loss(h2, labels, lo);
  ref.loss.backward();
  EXPECT_LT(max_rel(out.loss.detach(), ref.loss.detach()), 1e-5);
  EXPECT_LT(max_rel(h.grad(), h2.grad()), 1e-5);
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_LT(max_rel(params[i].tensor->grad(), plain_params[i].tensor->grad()), 1e-5) << params[i].name;
  lo.return_logits = true;
  lo.reduction = olm::nn::LossReduction::kNone;
  at::NoGradGuard no_grad;
  auto fused_none = head.loss(h, labels, lo);
  auto plain_none = plain.loss(h, labels, lo);
  EXPECT_TRUE(at::equal(fused_none.logits.value(), plain_none.logits.value()));
  EXPECT_TRUE(at::allclose(fused_none.loss, plain_none.loss, 1e-5, 1e-5));
}

// A whole nGPT config takes loss_implementation "fused_linear" (once refused) and gives the
// default loss and every parameter's gradient, from the same seeded init.
TEST(Loss, FusedLinearNormalizedTransformerEqualsDefault) {
  auto config = [](const std::string& loss) {
    return olm::Config::from_json(R"({"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2,
      "init_method": "normalized", "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4,
      "qk_norm": {"name": "l2_norm"}, "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
      "lm_head": {"name": "normalized", "loss_implementation": ")" + loss + R"("}})");
  };
  olm::Model fused(config("fused_linear"), "cpu", {}), plain(config("default"), "cpu", {});
  const auto ids = at::randint(64, {2, 12}, gen(41), at::TensorOptions().dtype(at::kLong));
  const auto labels = at::randint(64, {2, 12}, gen(42), at::TensorOptions().dtype(at::kLong));
  olm::nn::LossOptions lo;
  lo.z_loss_multiplier = 1e-4;
  // The module's loss: Model::loss is for evaluation and runs without autograd.
  const auto a = fused.module().loss(ids, labels, lo), b = plain.module().loss(ids, labels, lo);
  a.loss.backward();
  b.loss.backward();
  EXPECT_NEAR(a.loss.item<double>(), b.loss.item<double>(), 1e-5 * b.loss.item<double>());
  auto fp = fused.module().named_parameters(), pp = plain.module().named_parameters();
  ASSERT_EQ(fp.size(), pp.size());
  double worst = 0;
  for (size_t i = 0; i < fp.size(); ++i) {
    ASSERT_EQ(fp[i].name, pp[i].name);
    ASSERT_TRUE(fp[i].tensor->grad().defined()) << fp[i].name;
    const auto want = pp[i].tensor->grad().to(at::kDouble);
    const double rel = ((fp[i].tensor->grad().to(at::kDouble) - want).abs().max() / want.abs().max()).item<double>();
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-5) << fp[i].name;
  }
  std::printf("[fused nGPT] model: loss %.6f vs %.6f, worst relative gradient difference %.3g\n",
              a.loss.item<double>(), b.loss.item<double>(), worst);
}

TEST(Init, TruncatedNormalAndSeeds) {
  auto t = at::empty({200000});
  auto g = gen(0);
  olm::nn::trunc_normal_(t, 0.02, g);
  EXPECT_LE(t.abs().max().item<double>(), 3 * 0.02 + 1e-9);
  // A normal truncated at +-3 sigma has standard deviation 0.98658 sigma.
  EXPECT_NEAR(t.std().item<double>(), 0.98658 * 0.02, 2e-4);
  EXPECT_NEAR(t.mean().item<double>(), 0.0, 3e-4);

  auto config = small_config("reordered_norm", true);
  olm::nn::Transformer a(config.spec()), b(config.spec());
  olm::nn::init_weights(a);
  olm::nn::init_weights(b);
  auto pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(*pa[i].tensor, *pb[i].tensor)) << pa[i].name;
  auto native = config.native();
  native.init_seed = 1;
  olm::nn::Transformer c(olm::Config::from_native(native).spec());
  olm::nn::init_weights(c);
  EXPECT_FALSE(at::equal(*pa[0].tensor, *c.named_parameters()[0].tensor));
  // Norm weights start at one, linear biases at zero.
  for (auto& p : pa)
    if (p.name.find("norm") != std::string::npos) EXPECT_TRUE(at::equal(*p.tensor, at::ones_like(*p.tensor))) << p.name;
}

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


// ---- intra-document masking, explicit softmax, soft-capping ---------------------------------

olm::Config doc_config(const std::string& attention_extra, const std::string& rope_extra = "",
                       const std::string& top_extra = "") {
  return olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 2)" + top_extra + R"(, "block": {"attention":
      {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000)" + rope_extra + "}" + attention_extra + R"(},
      "feed_forward": {"hidden_size": 32, "bias": false}, "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
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

// RoPE at per-token positions equals the float64 rotation at those positions.
TEST(Documents, RopeRestartsInEveryDocument) {
  olm::RoPESpec spec;
  spec.theta = 10000;
  olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
  auto q = randn({2, 12, 3, 8}, 61), k = randn({2, 12, 1, 8}, 62);
  auto cu = at::tensor(std::vector<int64_t>{0, 5, 12, 15, 19, 24}, at::kLong);
  auto [qr, kr] = rope.apply_at(q, k, olm::nn::document_positions(cu, 2, 12));
  const std::vector<std::pair<int64_t, int64_t>> docs = {{0, 5}, {5, 12}, {12, 15}, {15, 19}, {19, 24}};
  for (auto [s, e] : docs) {
    const int64_t b = s / 12, t0 = s % 12, n = e - s;
    auto slice = [&](const at::Tensor& t) { return t.select(0, b).slice(0, t0, t0 + n).unsqueeze(0); };
    EXPECT_LT(max_diff(slice(qr), ref_rope(slice(q), 10000, 0)), 1e-5) << s;
    EXPECT_LT(max_diff(slice(kr), ref_rope(slice(k), 10000, 0)), 1e-5) << s;
  }
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

// The explicit-softmax backend against SDPA and against the float64 reference; soft-capping
// against the float64 reference (scores of magnitude ~1-5, so a cap of 1.5 really bites).
TEST(Attention, ExplicitBackendAndSoftcapMatchFloat64) {
  for (std::optional<double> cap : {std::optional<double>(), std::optional<double>(1.5)}) {
    olm::AttentionSpec spec;
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.head_dim = 4;
    spec.bias = false;
    olm::RoPESpec rope;
    rope.theta = 10000;
    spec.rope = rope;
    spec.backend = "explicit";
    spec.softcap = cap;
    olm::nn::Attention att(16, spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(att, 81);
    at::NoGradGuard g;
    auto x = randn({2, 7, 16}, 82) * 2;
    auto y = att.forward(x);
    EXPECT_LT(max_diff(y, ref_attention(att, spec, x)), 1e-5) << (cap ? "softcap" : "plain");
    auto sdpa_spec = spec;
    sdpa_spec.backend = "torch";
    sdpa_spec.softcap.reset();
    olm::nn::Attention sdpa(16, sdpa_spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(sdpa, 81);
    if (!cap) EXPECT_LT(max_diff(y, sdpa.forward(x)), 1e-5);
    else EXPECT_GT(max_diff(y, sdpa.forward(x)), 1e-3) << "the cap must change something";
  }
}

// ---- positions, tied embeddings, L2 norm ---------------------------------------------------

TEST(Positions, AlibiSlopesForAnyHeadCount) {
  // The paper's examples: 8 heads give 1/2 ... 1/256.
  const auto eight = olm::nn::alibi_slopes(8);
  for (int h = 0; h < 8; ++h) EXPECT_DOUBLE_EQ(eight[static_cast<size_t>(h)], std::pow(0.5, h + 1));
  for (int64_t n = 1; n <= 24; ++n) {
    const auto got = olm::nn::alibi_slopes(n), want = ref_alibi_slopes(n);
    ASSERT_EQ(got.size(), want.size()) << n;
    for (size_t h = 0; h < got.size(); ++h) EXPECT_NEAR(got[h], want[h], 1e-15) << n << " heads, head " << h;
  }
  // 6 heads: the 4-head slopes then the odd ones of 8.
  const std::vector<double> six = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  EXPECT_EQ(olm::nn::alibi_slopes(6), six);
}

// ALiBi on both backends (SDPA with an additive mask, explicit softmax) against the float64
// reference, with 6 heads (not a power of two) and GQA.
TEST(Attention, AlibiMatchesFloat64) {
  for (const std::string backend : {"torch", "explicit"}) {
    olm::AttentionSpec spec;
    spec.n_heads = 6;
    spec.n_kv_heads = 3;
    spec.head_dim = 4;
    spec.bias = false;
    spec.alibi = true;
    spec.backend = backend;
    olm::nn::Attention att(16, spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(att, 91);
    at::NoGradGuard g;
    auto x = randn({2, 9, 16}, 92);
    EXPECT_LT(max_diff(att.forward(x), ref_attention(att, spec, x)), 1e-5) << backend;
  }
}

// float64 RoPE variants: interleaved pairs, xPos scaling (Sun et al.), both at a start offset.
at::Tensor ref_rope_variant(const at::Tensor& x, double theta, int64_t start, bool interleaved,
                            std::optional<double> xpos_base, double sign) {
  auto xd = x.to(at::kDouble);
  auto out = xd.clone();
  const int64_t T = x.size(1), D = x.size(-1), half = D / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const double n = static_cast<double>(start + t);
      const double angle = n * std::pow(theta, -2.0 * i / D);
      const double c = std::cos(angle), s = std::sin(angle);
      const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
      double scale = 1;
      if (xpos_base) scale = std::pow((2.0 * i / D + 0.4) / 1.4, sign * n / *xpos_base);
      auto a = xd.select(1, t).select(-1, ia), b = xd.select(1, t).select(-1, ib);
      out.select(1, t).select(-1, ia).copy_((a * c - b * s) * scale);
      out.select(1, t).select(-1, ib).copy_((b * c + a * s) * scale);
    }
  return out;
}

TEST(Rope, InterleavedXposAndDynamicNtkMatchFloat64) {
  auto q = randn({2, 6, 3, 8}, 101), k = randn({2, 6, 1, 8}, 102);
  for (bool interleaved : {false, true})
    for (std::optional<double> xpos : {std::optional<double>(), std::optional<double>(4.0)}) {
      olm::RoPESpec spec;
      spec.theta = 10000;
      spec.interleaved = interleaved;
      spec.xpos_scale_base = xpos;
      olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
      for (int64_t start : {0, 5}) {
        auto [qr, kr] = rope.apply(q, k, start);
        EXPECT_LT(max_diff(qr, ref_rope_variant(q, 10000, start, interleaved, xpos, 1.0)), 1e-5)
            << "interleaved " << interleaved << " xpos " << xpos.has_value() << " start " << start;
        EXPECT_LT(max_diff(kr, ref_rope_variant(k, 10000, start, interleaved, xpos, -1.0)), 1e-5);
      }
    }
  // Dynamic NTK: theta up to old_context_len, then theta * (f L / old - (f - 1))^(d / (d - 2))
  // (Hugging Face's; f = 1 is OLM's theta * (L / old)^(d / (d - 2))).
  for (double f : {1.0, 2.0}) {
    olm::RoPESpec spec;
    spec.theta = 10000;
    olm::RoPEScalingSpec sc;
    sc.name = "dynamic_ntk";
    sc.factor = f;
    sc.old_context_len = 8;
    spec.scaling = sc;
    olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
    for (int64_t len : {6, 8, 13, 20}) {
      const double base = len <= 8 ? 10000.0
                          : f == 1.0 ? 10000.0 * std::pow(len / 8.0, 8.0 / 6.0)
                                     : 10000.0 * std::pow(2.0 * len / 8.0 - 1.0, 8.0 / 6.0);
      auto [sin, cos] = rope.tables(len, at::Device(at::kCPU));
      ASSERT_EQ(sin.size(0), len);
      for (int64_t t : {int64_t{1}, len - 1})
        for (int64_t i : {0, 1, 3}) {
          const double angle = static_cast<double>(t) * std::pow(base, -2.0 * i / 8);
          EXPECT_NEAR(sin[t][i].item<double>(), std::sin(angle), 4e-6) << "len " << len;
          EXPECT_NEAR(cos[t][i + 4].item<double>(), std::cos(angle), 4e-6) << "len " << len;
        }
    }
  }
}

TEST(Norms, L2NormMatchesFloat64) {
  auto spec = norm_spec("l2_norm", false);
  spec.elementwise_affine = false;  // as config resolution sets it
  auto ln = olm::nn::LayerNorm(16, spec, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(ln.named_parameters().empty());
  auto x = randn({3, 5, 16}, 111) * 3;
  auto xd = x.to(at::kDouble);
  EXPECT_LT(max_diff(ln.forward(x), xd / xd.pow(2).sum(-1, true).sqrt()), 1e-6);
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
