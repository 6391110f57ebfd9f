// Helpers shared by the C++ test files.
#pragma once
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "core/train/train_config.h"

namespace olm::testing {

// The largest elementwise difference of two tensors, compared in float64 (the tests'
// reference implementations compute in float64).
inline double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// A fresh directory under the test temp dir.
inline std::string temp_dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name + "_XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back(0);
  return mkdtemp(buf.data());
}

// f must throw olm::Error with `code` and a message containing `needle`.
inline void expect_error(const std::function<void()>& f, olm::ErrorCode code, const std::string& needle) {
  try {
    f();
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_THAT(e.what(), ::testing::HasSubstr(needle));
  }
}

// How far apart two AdamW trajectories of `steps` steps can drift on one weight, when their
// gradients differ only by float32 rounding (another summation order: ranks, micro-batches,
// another machine's SIMD kernels). On an element whose gradient is itself at rounding level,
// the two runs' gradients can differ in sign, and AdamW's normalised update m^/(sqrt(v^)+eps)
// turns that into a full-size step either way: up to 2 * lr_t * rho_t apart per step, where
// rho_t bounds |m^_t| / sqrt(v^_t) for any gradient history (Cauchy-Schwarz over the two
// exponential averages):
//   rho_t = (1 - b1) / sqrt(1 - b2) * sqrt(sum_{k<t} (b1^2 / b2)^k) * sqrt(1 - b2^t) / (1 - b1^t)
// (rho_1 = 1: Adam's first step is lr * sign(g)). Decoupled weight decay multiplies both runs'
// weights by the same (1 - lr * wd), clipping scales a gradient without changing the ratio, and
// eps only shrinks it, so the sum over steps bounds the difference. This is a worst case for
// the few rounding-level elements; the per-step loss comparisons carry the tight check on
// everything else.
inline double adamw_drift_bound(const olm::train::TrainSpec& spec, int64_t steps) {
  const auto& o = spec.optimizer;
  const int64_t t_max = std::max<int64_t>(spec.scheduler.units_tokens ? spec.max_steps * spec.global_batch_size
                                                                      : spec.max_steps,
                                          1);
  double lr_scale = 1;  // the largest group learning rate relative to the default group's
  for (const auto& g : o.group_overrides)
    if (g.lr) lr_scale = std::max(lr_scale, *g.lr / o.lr);
  double bound = 0, geometric = 0;
  for (int64_t t = 1; t <= steps; ++t) {
    geometric += std::pow(o.beta1 * o.beta1 / o.beta2, static_cast<double>(t - 1));
    const double rho = (1 - o.beta1) / std::sqrt(1 - o.beta2) * std::sqrt(geometric) *
                       std::sqrt(1 - std::pow(o.beta2, static_cast<double>(t))) /
                       (1 - std::pow(o.beta1, static_cast<double>(t)));
    // The step's learning rate comes from the counter before or after it: take the larger.
    const int64_t unit = spec.scheduler.units_tokens ? spec.global_batch_size : 1;
    const double lr = std::max(spec.scheduler.lr(o.lr, (t - 1) * unit, t_max), spec.scheduler.lr(o.lr, t * unit, t_max));
    bound += 2 * lr_scale * lr * rho;
  }
  return bound;
}

}  // namespace olm::testing
