// core/nn/layer_norm.cpp: RMSNorm, LayerNorm and L2 norm against float64.
#include <gtest/gtest.h>

#include "core/nn/layer_norm.h"
#include "kernels/rms_norm.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

TEST(Norms, L2NormMatchesFloat64) {
  auto spec = norm_spec("l2_norm", false);
  spec.elementwise_affine = false;  // as config resolution sets it
  auto ln = olm::nn::LayerNorm(16, spec, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(ln.named_parameters().empty());
  auto x = randn({3, 5, 16}, 111) * 3;
  auto xd = x.to(at::kDouble);
  EXPECT_LT(max_diff(ln.forward(x), xd / xd.pow(2).sum(-1, true).sqrt()), 1e-6);
}

}  // namespace
