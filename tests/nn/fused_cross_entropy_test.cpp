// The fused cross-entropy (+ z-loss) backward against autograd's chain through ATen, bit for
// bit. ctest also runs these tests with ATEN_CPU_CAPABILITY=avx2 and =default
// (tests/CMakeLists.txt), so each kernel build meets the ATen kernels of its own capability.
#include <ATen/Version.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "core/nn/cpu_fusion.h"
#include "core/nn/fused_cross_entropy.h"
#include "core/nn/lm_head.h"
#include "test_util.h"

namespace {

using olm::nn::LossReduction;

// Equal down to the bit: at::equal takes -0 for +0 and never NaN for NaN.
bool bit_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.nbytes()) == 0;
}

struct LossAndGrad {
  at::Tensor ce, z, grad;
};

// cross_entropy_loss as the LM head calls it, then the backward of (ce + z) scaled the way a
// trainer's loss division does (scale) or, for "none", weighted per row (row_weights).
LossAndGrad run(bool fused, const at::Tensor& logits_value, const at::Tensor& labels, int64_t ignore_index,
                LossReduction reduction, std::optional<double> z_loss, double scale, const at::Tensor& row_weights) {
  olm::nn::set_cpu_fusion_enabled(fused);
  auto logits = logits_value.clone().requires_grad_(true);
  EXPECT_EQ(olm::nn::fused_cross_entropy_applies(logits, labels), fused);
  auto [ce, z] = olm::nn::cross_entropy_loss(logits, labels, ignore_index, reduction, z_loss);
  olm::nn::set_cpu_fusion_enabled(true);
  // Which backward runs: the fused function's node, or nll_loss's on top of log_softmax's.
  EXPECT_EQ(ce.grad_fn()->name().find("FusedCrossEntropy") != std::string::npos, fused) << ce.grad_fn()->name();
  auto total = z ? ce + *z : ce;
  auto objective = reduction == LossReduction::kNone ? (total * row_weights).sum() : total / scale;
  objective.backward();
  return {ce.detach(), z ? z->detach() : at::Tensor(), logits.grad()};
}

// "avx512", "avx2", "default", as ATEN_CPU_CAPABILITY spells them.
std::string capability_name() {
  auto name = at::get_cpu_capability();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name;
}

// The capability ctest asked for is the one ATen (and so the kernel) runs.
TEST(FusedCrossEntropy, RunsTheCapabilityTheEnvironmentAsksFor) {
  const char* asked = std::getenv("ATEN_CPU_CAPABILITY");
  if (asked == nullptr) GTEST_SKIP() << "ATen runs its own choice: " << capability_name();
  EXPECT_EQ(capability_name(), asked);
}

TEST(FusedCrossEntropy, LossAndLogitsGradientBitIdenticalToAutogradChain) {
  const int64_t ignore_index = -100;
  int cases = 0;
  for (int64_t vocab : {1, 2, 7, 8, 15, 16, 17, 31, 33, 50257}) {
    for (int64_t tokens : {1, 3, 37}) {
      for (int pattern = 0; pattern < 3; ++pattern) {  // nothing, some, every row ignored
        at::manual_seed(1000 * vocab + 10 * tokens + pattern);
        const auto logits = at::randn({tokens, vocab}) * 4.0;
        auto labels = at::randint(0, vocab, {tokens}, at::kLong);
        if (pattern == 1) labels.masked_fill_(at::rand({tokens}) < 0.4, ignore_index);
        if (pattern == 2) labels.fill_(ignore_index);
        // A zero weight makes a -0 label gradient (the row sum's signed-zero case).
        auto row_weights = at::randn({tokens});
        row_weights[0] = 0.0;
        for (auto reduction : {LossReduction::kMean, LossReduction::kSum, LossReduction::kNone}) {
          for (std::optional<double> z_loss : {std::optional<double>(), std::optional<double>(1e-4)}) {
            for (double scale : {1.0, 3.0}) {
              const auto chain = run(false, logits, labels, ignore_index, reduction, z_loss, scale, row_weights);
              const auto fused = run(true, logits, labels, ignore_index, reduction, z_loss, scale, row_weights);
              const auto where = ::testing::Message() << "vocab " << vocab << " tokens " << tokens << " pattern "
                                                      << pattern << " reduction " << static_cast<int>(reduction)
                                                      << " z " << z_loss.has_value() << " scale " << scale
                                                      << " capability " << capability_name();
              EXPECT_TRUE(bit_equal(fused.ce, chain.ce)) << where;
              if (z_loss) EXPECT_TRUE(bit_equal(fused.z, chain.z)) << where;
              EXPECT_TRUE(bit_equal(fused.grad, chain.grad))
                  << where << " max diff " << olm::testing::max_diff(fused.grad, chain.grad);
              ++cases;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 10 * 3 * 3 * 3 * 2 * 2);
}

// The gradient is the derivative: (softmax - onehot) * dce + softmax * dlse per row, in float64.
TEST(FusedCrossEntropy, GradientMatchesFloat64Recomputation) {
  const int64_t tokens = 29, vocab = 1003, ignore_index = -1;
  at::manual_seed(7);
  const auto logits = at::randn({tokens, vocab}) * 3.0;
  auto labels = at::randint(0, vocab, {tokens}, at::kLong);
  labels.index_put_({at::arange(0, tokens, 4)}, ignore_index);
  const double multiplier = 1e-2, scale = 2.0;
  const auto fused = run(true, logits, labels, ignore_index, LossReduction::kMean, multiplier, scale, at::Tensor());

  const auto x = logits.to(at::kDouble);
  const auto valid = labels.ne(ignore_index);
  const auto count = valid.sum().item<double>();
  const auto lse = x.logsumexp(-1);
  const auto p = (x - lse.unsqueeze(1)).exp();
  const auto onehot = at::one_hot(labels.clamp_min(0), vocab).to(at::kDouble) * valid.unsqueeze(1);
  const auto ce = ((lse - x.gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)) * valid).sum() / count;
  const auto dce = valid.to(at::kDouble) / (count * scale);
  const auto dlse = multiplier * 2.0 * lse * valid / (count * scale);
  const auto expected = (p - onehot) * dce.unsqueeze(1) + p * dlse.unsqueeze(1);
  EXPECT_LT(std::abs(fused.ce.item<double>() - ce.item<double>()), 1e-5);
  EXPECT_LT(olm::testing::max_diff(fused.grad, expected), 1e-8);
  // Ignored rows are masked out of both means, so nothing reaches their logits.
  EXPECT_EQ(fused.grad.index({at::arange(0, tokens, 4)}).abs().max().item<float>(), 0.0f);
}

// Outside its scope the ATen chain runs: other dtypes, no gradient wanted, strided logits.
TEST(FusedCrossEntropy, AppliesOnlyToContiguousFloat32LogitsThatWantGradients) {
  const auto labels = at::zeros({4}, at::kLong);
  const auto logits = at::randn({4, 9}).requires_grad_(true);
  EXPECT_TRUE(olm::nn::fused_cross_entropy_applies(logits, labels));
  EXPECT_FALSE(olm::nn::fused_cross_entropy_applies(logits.detach().to(at::kDouble).requires_grad_(true), labels));
  EXPECT_FALSE(olm::nn::fused_cross_entropy_applies(logits.detach(), labels));
  EXPECT_FALSE(olm::nn::fused_cross_entropy_applies(at::randn({9, 4}).t().requires_grad_(true), labels));
  {
    at::NoGradGuard no_grad;
    EXPECT_FALSE(olm::nn::fused_cross_entropy_applies(logits, labels));
  }
  olm::nn::set_cpu_fusion_enabled(false);
  EXPECT_FALSE(olm::nn::fused_cross_entropy_applies(logits, labels));
  olm::nn::set_cpu_fusion_enabled(true);
}

}  // namespace
