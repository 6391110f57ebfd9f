// core/nn/rope.cpp: RoPE tables and rotations against float64, at per-token positions too.
#include <gtest/gtest.h>

#include "core/nn/rope.h"
#include "nn/reference.h"

using namespace olm::testing;

namespace {

TEST(Rope, TablesAndRotationMatchFloat64) {
  olm::RoPESpec spec;
  spec.theta = 10000;
  auto cache = std::make_shared<olm::nn::BufferCache>();
  olm::nn::RotaryEmbedding rope(8, spec, cache);
  auto [sin, cos] = rope.tables(12, at::Device(at::kCPU));
  for (int64_t t : {0, 5, 11})
    for (int64_t i : {0, 2, 3}) {
      const double angle = t * std::pow(10000.0, -2.0 * i / 8);
      EXPECT_NEAR(sin[t][i].item<double>(), std::sin(angle), 2e-6);
      EXPECT_NEAR(cos[t][i + 4].item<double>(), std::cos(angle), 2e-6);
    }
  auto q = randn({2, 6, 3, 8}, 4), k = randn({2, 6, 1, 8}, 5);
  for (int64_t start : {0, 7}) {
    auto [qr, kr] = rope.apply(q, k, start);
    EXPECT_LT(max_diff(qr, ref_rope(q, 10000, start)), 1e-5) << "start " << start;
    EXPECT_LT(max_diff(kr, ref_rope(k, 10000, start)), 1e-5);
  }
  // Rotation preserves each pair's norm.
  auto [qr, kr] = rope.apply(q, k, 3);
  EXPECT_LT(max_diff(qr.norm(2, -1), q.norm(2, -1)), 1e-5);
}

// RoPE at per-token positions equals the float64 rotation at those positions.
TEST(Documents, RopeRestartsInEveryDocument) {
  olm::RoPESpec spec;
  spec.theta = 10000;
  olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
  auto q = randn({2, 12, 3, 8}, 61), k = randn({2, 12, 1, 8}, 62);
  auto cu = at::tensor(std::vector<int64_t>{0, 5, 12, 15, 19, 24}, at::kLong);
  auto [qr, kr] = rope.apply_at(q, k, olm::nn::document_positions(cu, 2, 12));
  const std::vector<std::pair<int64_t, int64_t>> docs = {{0, 5}, {5, 12}, {12, 15}, {15, 19}, {19, 24}};
  for (auto [s, e] : docs) {
    const int64_t b = s / 12, t0 = s % 12, n = e - s;
    auto slice = [&](const at::Tensor& t) { return t.select(0, b).slice(0, t0, t0 + n).unsqueeze(0); };
    EXPECT_LT(max_diff(slice(qr), ref_rope(slice(q), 10000, 0)), 1e-5) << s;
    EXPECT_LT(max_diff(slice(kr), ref_rope(slice(k), 10000, 0)), 1e-5) << s;
  }
}

TEST(Rope, InterleavedXposAndDynamicNtkMatchFloat64) {
  auto q = randn({2, 6, 3, 8}, 101), k = randn({2, 6, 1, 8}, 102);
  for (bool interleaved : {false, true})
    for (std::optional<double> xpos : {std::optional<double>(), std::optional<double>(4.0)}) {
      olm::RoPESpec spec;
      spec.theta = 10000;
      spec.interleaved = interleaved;
      spec.xpos_scale_base = xpos;
      olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
      for (int64_t start : {0, 5}) {
        auto [qr, kr] = rope.apply(q, k, start);
        EXPECT_LT(max_diff(qr, ref_rope_variant(q, 10000, start, interleaved, xpos, 1.0)), 1e-5)
            << "interleaved " << interleaved << " xpos " << xpos.has_value() << " start " << start;
        EXPECT_LT(max_diff(kr, ref_rope_variant(k, 10000, start, interleaved, xpos, -1.0)), 1e-5);
      }
    }
  // Dynamic NTK: theta up to old_context_len, then theta * (f L / old - (f - 1))^(d / (d - 2))
  // (Hugging Face's; f = 1 is OLM's theta * (L / old)^(d / (d - 2))).
  for (double f : {1.0, 2.0}) {
    olm::RoPESpec spec;
    spec.theta = 10000;
    olm::RoPEScalingSpec sc;
    sc.name = "dynamic_ntk";
    sc.factor = f;
    sc.old_context_len = 8;
    spec.scaling = sc;
    olm::nn::RotaryEmbedding rope(8, spec, std::make_shared<olm::nn::BufferCache>());
    for (int64_t len : {6, 8, 13, 20}) {
      const double base = len <= 8 ? 10000.0
                          : f == 1.0 ? 10000.0 * std::pow(len / 8.0, 8.0 / 6.0)
                                     : 10000.0 * std::pow(2.0 * len / 8.0 - 1.0, 8.0 / 6.0);
      auto [sin, cos] = rope.tables(len, at::Device(at::kCPU));
      ASSERT_EQ(sin.size(0), len);
      for (int64_t t : {int64_t{1}, len - 1})
        for (int64_t i : {0, 1, 3}) {
          const double angle = static_cast<double>(t) * std::pow(base, -2.0 * i / 8);
          EXPECT_NEAR(sin[t][i].item<double>(), std::sin(angle), 4e-6) << "len " << len;
          EXPECT_NEAR(cos[t][i + 4].item<double>(), std::cos(angle), 4e-6) << "len " << len;
        }
    }
  }
}

}  // namespace
