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
#include "core/model.h"
#include "core/nn/transformer.h"
#include "kernels/rms_norm.h"

using ::testing::HasSubstr;

namespace {

at::Generator gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  auto g = gen(seed);
  return at::randn(shape, g, at::kFloat);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

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

// Causal softmax attention written out, with GQA head mapping h -> h / (H / Hkv).
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

}  // namespace
