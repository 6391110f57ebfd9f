// core/nn/feed_forward.cpp and activation.cpp: every activation, gated and classic, against float64.
#include <gtest/gtest.h>

#include "core/nn/feed_forward.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

}  // namespace
