// core/nn/attention.cpp: MHA/GQA, QK-norm, clipping, ALiBi, soft-capping and the explicit backend against float64.
#include <gtest/gtest.h>

#include "core/nn/attention.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

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

// The explicit-softmax backend against SDPA and against the float64 reference; soft-capping
// against the float64 reference (scores of magnitude ~1-5, so a cap of 1.5 really bites).
TEST(Attention, ExplicitBackendAndSoftcapMatchFloat64) {
  for (std::optional<double> cap : {std::optional<double>(), std::optional<double>(1.5)}) {
    olm::AttentionSpec spec;
    spec.n_heads = 4;
    spec.n_kv_heads = 2;
    spec.head_dim = 4;
    spec.bias = false;
    olm::RoPESpec rope;
    rope.theta = 10000;
    spec.rope = rope;
    spec.backend = "explicit";
    spec.softcap = cap;
    olm::nn::Attention att(16, spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(att, 81);
    at::NoGradGuard g;
    auto x = randn({2, 7, 16}, 82) * 2;
    auto y = att.forward(x);
    EXPECT_LT(max_diff(y, ref_attention(att, spec, x)), 1e-5) << (cap ? "softcap" : "plain");
    auto sdpa_spec = spec;
    sdpa_spec.backend = "torch";
    sdpa_spec.softcap.reset();
    olm::nn::Attention sdpa(16, sdpa_spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(sdpa, 81);
    if (!cap) EXPECT_LT(max_diff(y, sdpa.forward(x)), 1e-5);
    else EXPECT_GT(max_diff(y, sdpa.forward(x)), 1e-3) << "the cap must change something";
  }
}

TEST(Positions, AlibiSlopesForAnyHeadCount) {
  // The paper's examples: 8 heads give 1/2 ... 1/256.
  const auto eight = olm::nn::alibi_slopes(8);
  for (int h = 0; h < 8; ++h) EXPECT_DOUBLE_EQ(eight[static_cast<size_t>(h)], std::pow(0.5, h + 1));
  for (int64_t n = 1; n <= 24; ++n) {
    const auto got = olm::nn::alibi_slopes(n), want = ref_alibi_slopes(n);
    ASSERT_EQ(got.size(), want.size()) << n;
    for (size_t h = 0; h < got.size(); ++h) EXPECT_NEAR(got[h], want[h], 1e-15) << n << " heads, head " << h;
  }
  // 6 heads: the 4-head slopes then the odd ones of 8.
  const std::vector<double> six = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  EXPECT_EQ(olm::nn::alibi_slopes(6), six);
}

// ALiBi on both backends (SDPA with an additive mask, explicit softmax) against the float64
// reference, with 6 heads (not a power of two) and GQA.
TEST(Attention, AlibiMatchesFloat64) {
  for (const std::string backend : {"torch", "explicit"}) {
    olm::AttentionSpec spec;
    spec.n_heads = 6;
    spec.n_kv_heads = 3;
    spec.head_dim = 4;
    spec.bias = false;
    spec.alibi = true;
    spec.backend = backend;
    olm::nn::Attention att(16, spec, std::make_shared<olm::nn::BufferCache>(), at::TensorOptions().dtype(at::kFloat));
    randomize(att, 91);
    at::NoGradGuard g;
    auto x = randn({2, 9, 16}, 92);
    EXPECT_LT(max_diff(att.forward(x), ref_attention(att, spec, x)), 1e-5) << backend;
  }
}

}  // namespace
