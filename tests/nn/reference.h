// Float64 references for the core/nn tests (and the model tests built from the same
// pieces), written independently of the code under test: explicit loops or double-precision
// ATen ops on the modules' parameters, plus the small seeded-input and config builders the
// tests share.
//
// Tolerances: the components compute in float32 (RMSNorm/RoPE/loss internally), inputs and
// weights are O(1), and sums run over at most a few hundred terms, so float32 rounding stays
// below ~1e-5 relative; the tests allow 1e-5 absolute on normalized outputs and 1e-4 on logits
// after several layers.
#pragma once
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/nn/transformer.h"
#include "test_util.h"

namespace olm::testing {

inline at::Generator gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

inline at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  auto g = gen(seed);
  return at::randn(shape, g, at::kFloat);
}

inline olm::LayerNormSpec norm_spec(const std::string& name, bool bias, double eps = 1e-5) {
  olm::LayerNormSpec s;
  s.name = name;
  s.bias = bias;
  s.eps = eps;
  return s;
}

// Gives every parameter of a module distinct random values (weights and biases).
inline void randomize(olm::nn::Module& m, uint64_t seed) {
  at::NoGradGuard g;
  for (auto& p : m.named_parameters()) p.tensor->copy_(randn(p.tensor->sizes(), seed++) * 0.3);
}

// ---- references ------------------------------------------------------------------------

inline at::Tensor ref_rms(const at::Tensor& x, const at::Tensor* w, double eps) {
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

inline at::Tensor ref_layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  auto xd = x.to(at::kDouble);
  auto mean = xd.mean(-1, true);
  auto var = (xd - mean).pow(2).mean(-1, true);
  return (xd - mean) / (var + eps).sqrt() * w.to(at::kDouble) + b.to(at::kDouble);
}

// Half-split RoPE at absolute positions start.., in float64: (B, T, H, D).
inline at::Tensor ref_rope(const at::Tensor& x, double theta, int64_t start) {
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

inline at::Tensor dlinear(const at::Tensor& x, at::Tensor& w, at::Tensor* b) {
  auto y = at::matmul(x, w.to(at::kDouble).t());
  return b ? y + b->to(at::kDouble) : y;
}

// Press et al.'s ALiBi slopes written from the paper: 2^(-8 (h + 1) / p) for the largest power
// of two p <= n, then 2^(-4 (2k + 1) / p) (the odd slopes of 2p) for the other n - p heads.
inline std::vector<double> ref_alibi_slopes(int64_t n) {
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
inline at::Tensor ref_attention(olm::nn::Attention& att, const olm::AttentionSpec& spec, const at::Tensor& x) {
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
inline at::Tensor ref_activation(const std::string& name, const at::Tensor& a) {
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

inline at::Tensor ref_ffn(olm::nn::FeedForward& ff, const std::string& activation, const at::Tensor& x) {
  auto xd = x.to(at::kDouble);
  auto h = ref_activation(activation, dlinear(xd, ff.w1().weight(), ff.w1().bias()));
  if (ff.w3()) h = h * dlinear(xd, ff.w3()->weight(), ff.w3()->bias());
  return dlinear(h, ff.w2().weight(), ff.w2().bias());
}

// The head's loss in float64 from (N, V) logits: mean cross-entropy over the labels that are
// not -100, and OLMo-core's z-loss (multiplier * mean logsumexp^2) over the same.
inline std::pair<at::Tensor, at::Tensor> mean_ce_and_z_loss64(const at::Tensor& logits64, const at::Tensor& labels,
                                                       double z_multiplier) {
  auto flat = labels.view({-1});
  auto mask = flat.ne(-100);
  auto lse64 = logits64.logsumexp(-1);
  auto ce64 = ((lse64 - logits64.gather(1, flat.clamp_min(0).unsqueeze(1)).squeeze(1)) * mask).sum() / mask.sum();
  auto z64 = z_multiplier * (lse64.pow(2) * mask).sum() / mask.sum();
  return {ce64, z64};
}

// ---- small configs -------------------------------------------------------------------

inline olm::Config small_config(const std::string& block, bool qk_norm) {
  std::string json = R"({"d_model": 16, "vocab_size": 40, "n_layers": 2, "block": {"name": ")" + block +
                     R"(", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000})" +
                     (qk_norm ? R"(, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})" : "") +
                     R"(}, "feed_forward": {"hidden_size": 32, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";
  return olm::Config::from_json(json);
}

inline olm::Config doc_config(const std::string& attention_extra, const std::string& rope_extra = "",
                       const std::string& top_extra = "") {
  return olm::Config::from_json(R"({"d_model": 16, "vocab_size": 40, "n_layers": 2)" + top_extra + R"(, "block": {"attention":
      {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000)" + rope_extra + "}" + attention_extra + R"(},
      "feed_forward": {"hidden_size": 32, "bias": false}, "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

// float64 RoPE variants: interleaved pairs, xPos scaling (Sun et al.), both at a start offset.
inline at::Tensor ref_rope_variant(const at::Tensor& x, double theta, int64_t start, bool interleaved,
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

}  // namespace olm::testing
