// core/nn/lm_head.cpp: cross-entropy and z-loss against float64.
#include <gtest/gtest.h>

#include "core/nn/lm_head.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

}  // namespace
