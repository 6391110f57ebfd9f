// core/nn/init.cpp: truncated-normal initialisation and seeding.
#include <gtest/gtest.h>

#include "core/nn/transformer.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

}  // namespace
