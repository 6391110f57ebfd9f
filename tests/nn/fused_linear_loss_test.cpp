// core/nn/fused_linear_loss.cpp: the chunked projection + cross-entropy against float64, values and gradients.
#include <gtest/gtest.h>

#include "core/nn/fused_linear_loss.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

}  // namespace
