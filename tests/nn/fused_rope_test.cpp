// core/nn/fused_rope: RotaryEmbedding's rotation with the fused CPU kernel against the ATen op
// chain it replaces (the process-wide switch off), bit for bit, forward and backward; and both
// against a float64 re-computation written here. ctest runs this file once per ATen CPU
// capability (ATEN_CPU_CAPABILITY=avx2 / default, and the machine's own).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Version.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>

#include <cctype>
#include <cstdlib>
#include <sstream>

#include "core/config/config.h"
#include "core/nn/cpu_fusion.h"
#include "core/nn/fused_rope.h"
#include "core/nn/rope.h"
#include "core/nn/transformer.h"
#include "test_util.h"

namespace {

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g, at::kFloat);
}

// Restores the switch however the test ends.
struct FusionSwitch {
  explicit FusionSwitch(bool on) { olm::nn::set_cpu_fusion_enabled(on); }
  ~FusionSwitch() { olm::nn::set_cpu_fusion_enabled(true); }
};

// at::equal treats -0 and +0 alike; the bit patterns tell them apart too.
void expect_same_bits(const at::Tensor& fused, const at::Tensor& aten, const std::string& what) {
  ASSERT_EQ(fused.sizes(), aten.sizes()) << what;
  // The same memory layout (a size-1 dimension's stride means nothing).
  for (int64_t d = 0; d < fused.dim(); ++d)
    if (fused.size(d) > 1) EXPECT_EQ(fused.stride(d), aten.stride(d)) << what << ": stride " << d;
  EXPECT_TRUE(at::equal(fused, aten)) << what << ": max diff " << olm::testing::max_diff(fused, aten);
  EXPECT_TRUE(at::equal(fused.contiguous().view(at::kInt), aten.contiguous().view(at::kInt)))
      << what << ": bit patterns differ (signed zeros)";
}

bool made_by_fused_kernel(const at::Tensor& t) {
  return t.grad_fn() && t.grad_fn()->name().find("FusedRope") != std::string::npos;
}

// Queries and keys with exact zeros of both signs among them, so the signed-zero rule of the
// backward is exercised, not only by the sin(0) column at position 0.
at::Tensor activations(at::IntArrayRef shape, uint64_t seed) {
  auto x = randn(shape, seed);
  x.view(-1).slice(0, 0, 3).fill_(0.0);
  x.view(-1).slice(0, 3, 6).fill_(-0.0);
  return x;
}

struct RopeCase {
  int64_t head_dim;
  double partial;
  bool interleaved;
  std::optional<double> xpos;
  bool yarn;  // tables times YaRN's attention factor
  std::string describe() const {
    std::ostringstream s;
    s << "head_dim " << head_dim << " partial " << partial << " interleaved " << interleaved << " xpos "
      << xpos.value_or(0) << " yarn " << yarn;
    return s.str();
  }
};

std::vector<RopeCase> rope_cases() {
  std::vector<RopeCase> cases;
  // Head dims below, at and past vector widths (4, 8, 16 floats) with odd tails; rotary dims
  // of 2, 6, 10, 24, 26 and 48 through partial RoPE.
  for (int64_t head_dim : {2, 8, 10, 34, 64})
    for (bool interleaved : {false, true}) {
      cases.push_back({head_dim, 1.0, interleaved, std::nullopt, false});
      cases.push_back({head_dim, 1.0, interleaved, 16.0, false});
    }
  for (bool interleaved : {false, true}) {
    cases.push_back({12, 0.5, interleaved, std::nullopt, false});
    cases.push_back({52, 0.5, interleaved, 16.0, false});
    cases.push_back({64, 0.75, interleaved, std::nullopt, true});
    cases.push_back({20, 0.5, interleaved, std::nullopt, true});
  }
  return cases;
}

olm::RoPESpec spec_for(const RopeCase& c) {
  olm::RoPESpec spec;
  spec.theta = 10000;
  spec.interleaved = c.interleaved;
  spec.partial_rotary_factor = c.partial;
  spec.xpos_scale_base = c.xpos;
  if (c.yarn) {
    olm::RoPEScalingSpec sc;
    sc.name = "yarn";
    sc.factor = 4.0;
    sc.old_context_len = 16;
    spec.scaling = sc;
  }
  return spec;
}

// Independent of the chain: the partner of each feature by an index, in float64.
at::Tensor ref_rotate(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                      int64_t rotary_dim, bool interleaved) {
  const int64_t D = x.size(-1), h = rotary_dim / 2;
  std::vector<int64_t> partner(static_cast<size_t>(rotary_dim));
  std::vector<double> sign(static_cast<size_t>(rotary_dim));
  for (int64_t j = 0; j < rotary_dim; ++j) {
    const bool first = interleaved ? j % 2 == 0 : j < h;
    partner[static_cast<size_t>(j)] = interleaved ? (first ? j + 1 : j - 1) : (first ? j + h : j - h);
    sign[static_cast<size_t>(j)] = first ? -1.0 : 1.0;
  }
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  auto rot = x.slice(-1, 0, rotary_dim);
  auto turned = rot.index_select(-1, at::tensor(partner, at::kLong)) * at::tensor(sign, f64);
  auto y = rot * cos.to(at::kDouble) + turned * sin.to(at::kDouble);
  if (scale.defined()) y = y * scale.to(at::kDouble);
  return rotary_dim == D ? y : at::cat({y, x.slice(-1, rotary_dim)}, -1);
}

struct Rotated {
  at::Tensor q, k, grad_q, grad_k;
};

// q (B, Tq, 3, D), k (B, Tk, 1, D); gradients as attention hands them back: (B, H, T, D)
// tensors seen through a transpose.
Rotated rotate_and_backward(const olm::nn::RotaryEmbedding& rope, const at::Tensor& q0, const at::Tensor& k0,
                            int64_t start, const at::Tensor& positions, bool fused) {
  FusionSwitch fusion(fused);
  auto q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_();
  auto [qr, kr] = positions.defined() ? rope.apply_at(q, k, positions) : rope.apply(q, k, start);
  auto gq = randn({q0.size(0), q0.size(2), q0.size(1), q0.size(3)}, 7).transpose(1, 2);
  auto gk = randn({k0.size(0), k0.size(2), k0.size(1), k0.size(3)}, 8).transpose(1, 2);
  gq.select(1, 0).fill_(-0.0);
  torch::autograd::backward({qr, kr}, {gq, gk});
  if (fused) {
    EXPECT_TRUE(made_by_fused_kernel(qr));
    EXPECT_TRUE(made_by_fused_kernel(kr));
  } else {
    EXPECT_FALSE(made_by_fused_kernel(qr));
  }
  return {qr.detach(), kr.detach(), q.grad(), k.grad()};
}

void expect_fused_equals_chain(const olm::nn::RotaryEmbedding& rope, const at::Tensor& q, const at::Tensor& k,
                               int64_t start, const at::Tensor& positions, const std::string& what) {
  const auto chain = rotate_and_backward(rope, q, k, start, positions, false);
  const auto fused = rotate_and_backward(rope, q, k, start, positions, true);
  expect_same_bits(fused.q, chain.q, what + " q");
  expect_same_bits(fused.k, chain.k, what + " k");
  expect_same_bits(fused.grad_q, chain.grad_q, what + " grad q");
  expect_same_bits(fused.grad_k, chain.grad_k, what + " grad k");
}

// The capability this process runs at is the one ctest asked for, so each ctest entry
// exercises the build of the loops it names.
TEST(FusedRope, RunsAtTheRequestedCpuCapability) {
  const char* requested = std::getenv("ATEN_CPU_CAPABILITY");
  if (!requested) GTEST_SKIP() << "no ATEN_CPU_CAPABILITY: the machine's own capability, " << at::get_cpu_capability();
  std::string upper(requested);
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_EQ(at::get_cpu_capability(), upper);
}

TEST(FusedRope, EqualsTheAtenChainForwardAndBackward) {
  struct Shape {
    int64_t B, Tq, Tk, start;
  };
  // A prompt, one token, a decode step after 5 cached positions, queries at the end of a
  // longer key window, and enough rows to split over threads.
  const std::vector<Shape> shapes{{2, 7, 7, 0}, {1, 1, 1, 0}, {2, 1, 1, 5}, {1, 3, 5, 2}, {3, 33, 33, 4}};
  for (const auto& c : rope_cases()) {
    olm::nn::RotaryEmbedding rope(c.head_dim, spec_for(c), std::make_shared<olm::nn::BufferCache>());
    for (const auto& s : shapes) {
      auto q = activations({s.B, s.Tq, 3, c.head_dim}, 1), k = activations({s.B, s.Tk, 1, c.head_dim}, 2);
      std::ostringstream what;
      what << c.describe() << " B " << s.B << " Tq " << s.Tq << " Tk " << s.Tk << " start " << s.start;
      expect_fused_equals_chain(rope, q, k, s.start, at::Tensor(), what.str());
    }
    // Per-token positions (documents packed in a row): the tables' rows picked per token.
    auto q = activations({2, 6, 3, c.head_dim}, 3), k = activations({2, 6, 1, c.head_dim}, 4);
    auto positions = at::tensor({0, 1, 2, 0, 1, 0, 0, 1, 2, 3, 4, 5}, at::kLong).view({2, 6});
    expect_fused_equals_chain(rope, q, k, 0, positions, c.describe() + " positions");
  }
}

TEST(FusedRope, MatchesFloat64) {
  for (const auto& c : rope_cases()) {
    olm::nn::RotaryEmbedding rope(c.head_dim, spec_for(c), std::make_shared<olm::nn::BufferCache>());
    const int64_t start = 3, T = 5, R = rope.rotary_dim();
    auto q = activations({2, T, 3, c.head_dim}, 5);
    auto k = activations({2, T, 1, c.head_dim}, 6);
    const auto fused = rotate_and_backward(rope, q, k, start, at::Tensor(), true);
    auto [sin, cos] = rope.tables(start + T, at::Device(at::kCPU));
    sin = sin.slice(0, start).unsqueeze(0).unsqueeze(2);
    cos = cos.slice(0, start).unsqueeze(0).unsqueeze(2);
    at::Tensor scale_q, scale_k;
    if (c.xpos) {
      auto pos = at::arange(start, start + T, at::kLong);
      scale_q = rope.xpos_scales(pos, 1.0).unsqueeze(0).unsqueeze(2);
      scale_k = rope.xpos_scales(pos, -1.0).unsqueeze(0).unsqueeze(2);
    }
    auto q64 = q.to(at::kDouble).requires_grad_(), k64 = k.to(at::kDouble).requires_grad_();
    auto q_ref = ref_rotate(q64, sin, cos, scale_q, R, c.interleaved);
    auto k_ref = ref_rotate(k64, sin, cos, scale_k, R, c.interleaved);
    auto gq = randn({2, 3, T, c.head_dim}, 7).transpose(1, 2), gk = randn({2, 1, T, c.head_dim}, 8).transpose(1, 2);
    gq.select(1, 0).fill_(-0.0);
    torch::autograd::backward({q_ref, k_ref}, {gq.to(at::kDouble), gk.to(at::kDouble)});
    // Two float32 roundings (three with xPos) of O(1) products.
    EXPECT_LT(olm::testing::max_diff(fused.q, q_ref), 1e-6) << c.describe();
    EXPECT_LT(olm::testing::max_diff(fused.k, k_ref), 1e-6) << c.describe();
    EXPECT_LT(olm::testing::max_diff(fused.grad_q, q64.grad()), 1e-6) << c.describe();
    EXPECT_LT(olm::testing::max_diff(fused.grad_k, k64.grad()), 1e-6) << c.describe();
  }
}

// Where the kernel does not apply, rotate() runs the chain: the switch off, other dtypes,
// non-contiguous inputs, tables that require grad.
TEST(FusedRope, AppliesOnlyWithinItsScope) {
  auto x = randn({1, 4, 2, 8}, 11);
  auto sin = randn({1, 4, 1, 8}, 12), cos = randn({1, 4, 1, 8}, 13);
  EXPECT_TRUE(olm::nn::fused_rope_applies(x, sin, cos, at::Tensor(), 8));
  EXPECT_TRUE(olm::nn::fused_rope_applies(x, sin.slice(-1, 0, 4), cos.slice(-1, 0, 4), at::Tensor(), 4));
  EXPECT_FALSE(olm::nn::fused_rope_applies(x, sin.slice(-1, 0, 3), cos.slice(-1, 0, 3), at::Tensor(), 3));
  EXPECT_FALSE(olm::nn::fused_rope_applies(x.to(at::kDouble), sin, cos, at::Tensor(), 8));
  EXPECT_FALSE(olm::nn::fused_rope_applies(x.transpose(1, 2), sin.slice(1, 0, 2), cos.slice(1, 0, 2), at::Tensor(), 8));
  EXPECT_FALSE(olm::nn::fused_rope_applies(x, sin.clone().requires_grad_(), cos, at::Tensor(), 8));
  {
    FusionSwitch off(false);
    EXPECT_FALSE(olm::nn::fused_rope_applies(x, sin, cos, at::Tensor(), 8));
  }
}

// A second derivative goes through the backward's ATen form, equal to the chain's.
TEST(FusedRope, DoubleBackwardEqualsTheChain) {
  for (bool interleaved : {false, true}) {
    olm::RoPESpec spec;
    spec.theta = 10000;
    spec.interleaved = interleaved;
    spec.partial_rotary_factor = 0.5;
    spec.xpos_scale_base = 16.0;
    olm::nn::RotaryEmbedding rope(12, spec, std::make_shared<olm::nn::BufferCache>());
    std::vector<at::Tensor> results;
    for (bool fused : {false, true}) {
      FusionSwitch fusion(fused);
      auto q = activations({2, 5, 3, 12}, 21).requires_grad_(), k = activations({2, 5, 1, 12}, 22);
      auto [qr, kr] = rope.apply(q, k, 2);
      auto g = randn({2, 5, 3, 12}, 23).requires_grad_();
      auto grad_q = torch::autograd::grad({qr}, {q}, {g}, /*retain_graph=*/true, /*create_graph=*/true)[0];
      auto second = torch::autograd::grad({(grad_q * grad_q).sum()}, {g})[0];
      results.push_back(grad_q.detach());
      results.push_back(second);
    }
    expect_same_bits(results[2], results[0], "grad q with create_graph");
    expect_same_bits(results[3], results[1], "second derivative");
  }
}

// The whole model: losses and every parameter gradient equal with the switch on and off, so
// no layout the fused kernel returns changes what the layers around it compute.
TEST(FusedRope, TransformerGradientsEqualTheChain) {
  for (const std::string rope : {R"({"theta": 10000})", R"({"theta": 10000, "interleaved": true})",
                                 R"({"theta": 10000, "partial_rotary_factor": 0.5})"})
    for (bool head_norm : {false, true}) {
      std::string json = R"({"d_model": 32, "vocab_size": 50, "n_layers": 2, "block": {"name": "reordered_norm",
        "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": )" + rope +
                         R"(, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "use_head_qk_norm": )" +
                         (head_norm ? "true" : "false") + R"(},
        "feed_forward": {"hidden_size": 64, "bias": false},
        "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
        "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";
      const auto config = olm::Config::from_json(json);
      auto g = at::detail::createCPUGenerator(41);
      auto ids = at::randint(50, {2, 11}, g, at::kLong);
      auto weights = randn({2, 11, 50}, 42);
      olm::nn::Transformer model(config.spec());
      olm::nn::init_weights(model);
      for (auto& p : model.named_parameters()) p.tensor->set_requires_grad(true);
      std::vector<std::vector<at::Tensor>> grads(2);
      std::vector<at::Tensor> logits(2);
      for (int fused = 0; fused < 2; ++fused) {
        FusionSwitch fusion(fused == 1);
        for (auto& p : model.named_parameters()) p.tensor->mutable_grad() = at::Tensor();
        logits[fused] = model.forward(ids);
        (logits[fused] * weights).sum().backward();
        for (auto& p : model.named_parameters()) grads[fused].push_back(p.tensor->grad());
      }
      const std::string what = rope + (head_norm ? " head qk norm" : "");
      expect_same_bits(logits[1].detach(), logits[0].detach(), what + " logits");
      ASSERT_EQ(grads[0].size(), grads[1].size());
      for (size_t i = 0; i < grads[0].size(); ++i)
        expect_same_bits(grads[1][i], grads[0][i], what + " gradient " + std::to_string(i));
    }
}

}  // namespace
