// core/nn/moe against a float64 per-token re-computation written here (routing, capacity drops,
// expert SwiGLUs, shared expert, OLMo-core's load-balancing and router z-loss formulas, the
// aux-loss-free bias update), MoE config validation, and MoEParity: routing decisions on
// OLMo-core's own inputs, from a fixture tests/parity/moe_parity.py writes (skipped without it).
//
// Tolerances: float32 matmuls over d_model = 16..64 terms of O(1) values give errors ~1e-6;
// we allow 1e-5 on outputs and losses.
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "core/model.h"
#include "core/nn/moe.h"
#include "core/checkpoint/checkpoint.h"
#include "core/train/trainer.h"
#include "test_util.h"

using ::testing::HasSubstr;

namespace {

const at::TensorOptions kF32 = at::TensorOptions().dtype(at::kFloat);

using olm::testing::max_diff;

olm::MoESpec moe_spec(bool dropless, int64_t experts, int64_t hidden, int64_t top_k) {
  olm::MoESpec s;
  s.dropless = dropless;
  s.num_experts = experts;
  s.hidden_size = hidden;
  s.router.top_k = top_k;
  s.capacity_factor = 1.2;
  return s;
}

void randomize(olm::nn::Module& m, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  for (auto& p : m.named_parameters()) p.tensor->normal_(0.0, 0.3, g);
}

// One expert's SwiGLU in float64, reading OLMo-core's layouts.
at::Tensor ref_expert(olm::nn::MoEMLP& mlp, const olm::MoESpec& s, int64_t d, int64_t e, const at::Tensor& x) {
  const int64_t H = s.hidden_size;
  at::Tensor w1, w3;
  if (s.dropless) {
    w1 = mlp.w1().to(at::kDouble).view({s.num_experts, H, d})[e].t();
    w3 = mlp.w3().to(at::kDouble).view({s.num_experts, H, d})[e].t();
  } else {
    w1 = mlp.w1().to(at::kDouble).view({s.num_experts, d, H})[e];
    w3 = mlp.w3().to(at::kDouble).view({s.num_experts, d, H})[e];
  }
  const auto w2 = mlp.w2().to(at::kDouble).view({s.num_experts, H, d})[e];
  const auto a = at::matmul(x, w1);
  return at::matmul(a / (1 + at::exp(-a)) * at::matmul(x, w3), w2);
}

struct RefOut {
  at::Tensor out;                     // (N, d)
  std::vector<std::vector<int64_t>> choice;  // per token, its experts in top-k order
  at::Tensor scores, logits;          // (N, E) float64
  int64_t dropped = 0;
};

// The whole MoE, token by token, in float64.
RefOut ref_moe(olm::nn::MoE& moe, const olm::MoESpec& s, const at::Tensor& x3) {
  const int64_t d = x3.size(-1), E = s.num_experts, k = s.router.top_k;
  const auto x = x3.reshape({-1, d}).to(at::kDouble);
  const int64_t N = x.size(0);
  RefOut r;
  r.logits = at::matmul(x, moe.router().weight().to(at::kDouble).view({E, d}).t());
  r.scores = s.router.sigmoid ? 1 / (1 + at::exp(-r.logits)) + 1e-7 : at::softmax(r.logits, -1);
  auto bias = moe.router().score_bias() ? moe.router().score_bias()->to(at::kDouble) : at::zeros({E}, at::kDouble);
  // ParallelMLP.expert_capacity: ensure_multiple_of(int(cf * top_k * N / E), 8).
  const auto wanted = static_cast<int64_t>(s.capacity_factor * static_cast<double>(k * N) / static_cast<double>(E));
  const int64_t capacity = s.dropless ? N * k : (wanted + 7) / 8 * 8;
  std::vector<int64_t> load(static_cast<size_t>(E), 0);
  r.out = at::zeros({N, d}, at::kDouble);
  for (int64_t t = 0; t < N; ++t) {
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t e = 0; e < E; ++e) ranked.push_back({(r.scores[t][e] + bias[e]).item<double>(), e});
    std::sort(ranked.begin(), ranked.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::vector<int64_t> chosen;
    std::vector<double> w;
    double norm = 0;
    for (int64_t j = 0; j < k; ++j) {
      chosen.push_back(ranked[static_cast<size_t>(j)].second);
      w.push_back(r.scores[t][chosen.back()].item<double>());
    }
    if (s.router.normalize_expert_weights) {
      const double p = *s.router.normalize_expert_weights;
      for (double v : w) norm += std::pow(std::abs(v), p);
      norm = std::pow(norm, 1 / p);
      for (double& v : w) v /= norm;
    }
    // Pairs reach their expert in (token, choice) order; a full expert drops the rest.
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = chosen[static_cast<size_t>(j)];
      if (load[static_cast<size_t>(e)]++ >= capacity) {
        ++r.dropped;
        continue;
      }
      r.out[t] += w[static_cast<size_t>(j)] * ref_expert(moe.experts().mlp(), s, d, e, x[t].unsqueeze(0))[0];
    }
    r.choice.push_back(chosen);
  }
  if (auto* shared = moe.shared_mlp()) {
    const auto h = shared->forward(x.to(at::kFloat)).to(at::kDouble);  // FeedForward is tested in nn_test
    r.out = h / (k + 1) + r.out * (static_cast<double>(k) / (k + 1));
  }
  return r;
}

void expect_matches_reference(olm::MoESpec s, int64_t d, uint64_t seed, int64_t expect_min_drops = 0) {
  olm::nn::MoE moe(d, s, kF32);
  randomize(moe, seed);
  if (auto* b = moe.router().score_bias()) b->copy_(at::randn({s.num_experts}, at::detail::createCPUGenerator(seed + 1)) * 0.3);
  auto g = at::detail::createCPUGenerator(seed + 2);
  const auto x = at::randn({3, 7, d}, g);
  at::NoGradGuard no_grad;
  const auto ref = ref_moe(moe, s, x);
  const auto routing = moe.router().forward(x, nullptr);
  const auto idx = routing.indices.reshape({-1, s.router.top_k});
  for (int64_t t = 0; t < idx.size(0); ++t)
    for (int64_t j = 0; j < s.router.top_k; ++j)
      ASSERT_EQ(idx[t][j].item<int64_t>(), ref.choice[static_cast<size_t>(t)][static_cast<size_t>(j)]) << t << " " << j;
  EXPECT_LT(max_diff(moe.forward(x, nullptr).reshape({-1, d}), ref.out), 1e-5);
  EXPECT_GE(ref.dropped, expect_min_drops);
  if (s.dropless) EXPECT_EQ(ref.dropped, 0);
}

}  // namespace

TEST(MoE, CapacityMoEDropsPastCapacityAndMatchesReference) {
  auto s = moe_spec(false, 4, 12, 2);
  s.capacity_factor = 0.5;  // 21 tokens * 2 / 4 = 10.5 wanted per expert, capacity ceil8(5) = 8
  expect_matches_reference(s, 16, 1, /*expect_min_drops=*/1);
}

TEST(MoE, DroplessSigmoidNormalizedSharedExpertMatchesReference) {
  auto s = moe_spec(true, 6, 10, 3);
  s.router.sigmoid = true;
  s.router.normalize_expert_weights = 1.0;
  olm::FeedForwardSpec shared;
  shared.hidden_size = 20;
  shared.bias = true;
  shared.activation = "silu";
  s.shared_mlp = shared;
  expect_matches_reference(s, 16, 2);
}

TEST(MoE, TopOneWithScoreBiasAndL2NormMatchesReference) {
  auto s = moe_spec(true, 5, 8, 1);
  s.router.bias_gamma = 0.01;
  expect_matches_reference(s, 12, 3);
  s.router.top_k = 2;
  s.router.normalize_expert_weights = 2.0;
  s.dropless = false;
  s.capacity_factor = 3.0;
  expect_matches_reference(s, 12, 4);
}

TEST(MoE, AuxLossesFollowOLMoCoreFormulasAndCarryGradients) {
  for (bool instance : {false, true}) {
    auto s = moe_spec(false, 4, 8, 2);
    s.lb_loss_weight = 0.5;
    s.lb_loss_instance = instance;
    s.z_loss_weight = 0.25;
    const int64_t d = 8, B = 2, S = 5, E = 4, k = 2;
    olm::nn::MoE moe(d, s, kF32);
    randomize(moe, 5);
    for (auto& p : moe.named_parameters()) p.tensor->set_requires_grad(true);
    const auto x = at::randn({B, S, d}, at::detail::createCPUGenerator(6));
    olm::nn::MoEAuxLosses aux;
    moe.forward(x, &aux);
    ASSERT_TRUE(aux.lb_loss.defined() && aux.router_z_loss.defined());
    RefOut ref;
    {
      at::NoGradGuard no_grad;
      ref = ref_moe(moe, s, x);
    }
    // load_balancing_loss: (E / k) * sum_e load_e * mean_t score_te / (B * S) ("local_batch"),
    // or per instance b: sum_b sum_e load_be * mean_{t in b} score_te / (routed pairs / k).
    double lb = 0;
    if (!instance) {
      for (int64_t e = 0; e < E; ++e) {
        int64_t load = 0;
        for (auto& c : ref.choice) load += std::count(c.begin(), c.end(), e);
        lb += static_cast<double>(load) * ref.scores.select(1, e).mean().item<double>();
      }
      lb /= static_cast<double>(B * S);
    } else {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t e = 0; e < E; ++e) {
          int64_t load = 0;
          for (int64_t t = b * S; t < (b + 1) * S; ++t) load += std::count(ref.choice[static_cast<size_t>(t)].begin(), ref.choice[static_cast<size_t>(t)].end(), e);
          lb += static_cast<double>(load) * ref.scores.slice(0, b * S, (b + 1) * S).select(1, e).mean().item<double>();
        }
      lb /= static_cast<double>(B * S * k) / k;
    }
    lb *= static_cast<double>(E) / k * 0.5;
    EXPECT_NEAR(aux.lb_loss.item<double>(), lb, 1e-6) << instance;
    const double z = at::logsumexp(ref.logits, -1).pow(2).sum().item<double>() / (B * S) * 0.25;
    EXPECT_NEAR(aux.router_z_loss.item<double>(), z, 1e-5);
    (aux.lb_loss + aux.router_z_loss).backward();
    EXPECT_GT(moe.router().weight().grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(MoE, ScoreBiasMovesTowardsUnderloadedExpertsAfterABatch) {
  auto s = moe_spec(true, 4, 8, 1);
  s.router.bias_gamma = 0.1;
  olm::nn::MoE moe(8, s, kF32);
  randomize(moe, 7);
  const auto x = at::randn({2, 9, 8}, at::detail::createCPUGenerator(8));
  at::Tensor load;
  {
    at::AutoGradMode grad(true);  // training: loads are recorded
    load = moe.router().forward(x, nullptr).batch_size_per_expert.to(at::kDouble);
    moe.router().forward(x, nullptr);  // a second micro-batch doubles them
  }
  moe.router().post_batch();
  const auto expected = ((2 * load).mean() - 2 * load).sign() * 0.1;
  EXPECT_LT(max_diff(*moe.router().score_bias(), expected), 1e-8);  // 0.1 in float32
  EXPECT_GT(expected.abs().sum().item<double>(), 0.0);
  moe.router().post_batch();  // nothing routed since: unchanged
  EXPECT_LT(max_diff(*moe.router().score_bias(), expected), 1e-8);
}

TEST(MoE, JitterScalesRouterInputsOnlyInTraining) {
  auto s = moe_spec(true, 4, 8, 2);
  olm::nn::MoE plain(8, s, kF32);
  s.router.jitter_eps = 0.2;
  olm::nn::MoE jittered(8, s, kF32);
  randomize(plain, 9);
  randomize(jittered, 9);
  const auto x = at::randn({2, 6, 8}, at::detail::createCPUGenerator(10));
  {
    at::NoGradGuard eval;
    EXPECT_EQ(max_diff(jittered.router().forward(x, nullptr).weights, plain.router().forward(x, nullptr).weights), 0.0);
  }
  // Training (grad mode): the router sees x * u, u ~ U[0.8, 1.2] per element.
  const auto a = jittered.router().forward(x, nullptr).weights;
  EXPECT_GT(max_diff(a, plain.router().forward(x, nullptr).weights), 0.0);
}

// The trainer adds the routers' losses to what it differentiates (their gradient reaches the
// router: with lb_loss_weight 0 and no router z-loss the router's step differs), also through
// activation-checkpointed blocks.
TEST(MoETraining, RouterLossesReachTheRouterAlsoThroughActivationCheckpointing) {
  auto config = [](const std::string& weights, const std::string& router = R"({"top_k": 2})") {
    return olm::Config::from_json(R"({"name": "moe", "d_model": 16, "vocab_size": 40, "n_layers": 2,
      "block": {"name": "moe_reordered_norm", "attention": {"n_heads": 2, "bias": false},
        "feed_forward_moe": {"num_experts": 4, "hidden_size": 8, "router": )" + router + ", " + weights + R"(},
        "layer_norm": {"name": "rms", "bias": false}},
      "lm_head": {"bias": false}})");
  };
  auto tc = [](const std::string& extra) {
    return olm::train::TrainConfig::from_json(R"({"sequence_length": 8, "global_batch_size": 32,
        "max_steps": 2, "optimizer": {"name": "sgd", "lr": 0.5})" + extra + "}");
  };
  const auto ids = at::randint(40, {4, 8}, at::detail::createCPUGenerator(11), at::kLong);
  auto with = std::make_shared<olm::Model>(config(R"("lb_loss_weight": 1.0, "z_loss_weight": 0.5)"), "cpu", olm::ModelOptions{});
  auto without = std::make_shared<olm::Model>(config(R"("lb_loss_weight": 0)"), "cpu", olm::ModelOptions{});
  olm::train::Trainer a(with, tc("")), b(without, tc(""));
  const auto ma = a.train_batch(ids), mb = b.train_batch(ids);
  EXPECT_EQ(ma.ce_loss, mb.ce_loss);  // same init, same forward
  EXPECT_GT(ma.lb_loss, 0.0);
  EXPECT_GT(ma.router_z_loss, 0.0);
  EXPECT_EQ(mb.lb_loss, 0.0);
  EXPECT_EQ(mb.router_z_loss, 0.0);
  auto router = [](olm::Model& m) {
    return m.module().blocks()[0]->feed_forward_moe()->router().weight().detach().clone();
  };
  EXPECT_GT(max_diff(router(*with), router(*without)), 1e-6);
  const auto attn = [](olm::Model& m) { return m.module().blocks()[1]->attention().w_q().weight().detach().clone(); };
  EXPECT_GT(max_diff(attn(*with), attn(*without)), 0.0);  // the aux gradients flow through the blocks below

  // Activation checkpointing: the recomputed blocks give the routers' losses their gradients
  // in the backward; weights (SGD at lr 0.5: the step is the gradient) and losses agree.
  for (const std::string& ac : {R"(, "ac_mode": "full")", R"(, "ac_mode": "selected_blocks", "ac_block_interval": 2)"}) {
    auto plain = std::make_shared<olm::Model>(config(R"("lb_loss_weight": 1.0, "z_loss_weight": 0.5)"), "cpu", olm::ModelOptions{});
    auto checkpointed = std::make_shared<olm::Model>(config(R"("lb_loss_weight": 1.0, "z_loss_weight": 0.5)"), "cpu", olm::ModelOptions{});
    olm::train::Trainer p2(plain, tc(R"(, "rank_microbatch_size": 16)")), c(checkpointed, tc(ac + R"(, "rank_microbatch_size": 16)"));
    for (int step = 0; step < 2; ++step) {
      const auto mp = p2.train_batch(ids), mc = c.train_batch(ids);
      EXPECT_NEAR(mp.lb_loss, mc.lb_loss, 1e-6) << ac;
      EXPECT_NEAR(mp.router_z_loss, mc.router_z_loss, 1e-6) << ac;
      EXPECT_NEAR(mp.ce_loss, mc.ce_loss, 1e-6) << ac;
    }
    double worst = 0;
    auto pw = plain->module().named_parameters(), cw = checkpointed->module().named_parameters();
    for (size_t i = 0; i < pw.size(); ++i) worst = std::max(worst, max_diff(*pw[i].tensor, *cw[i].tensor));
    EXPECT_LT(worst, 1e-6) << ac;
  }
  // Router jitter would draw new noise in the recompute, so it is refused with checkpointing.
  auto jittered = std::make_shared<olm::Model>(
      config(R"("lb_loss_weight": 0.01)", R"({"top_k": 2, "jitter_eps": 0.1})"), "cpu", olm::ModelOptions{});
  try {
    olm::train::Trainer j(jittered, tc(R"(, "ac_mode": "full")"));
    ADD_FAILURE() << "activation checkpointing accepted with router jitter";
  } catch (const olm::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ac_mode"));
    EXPECT_THAT(e.what(), HasSubstr("jitter_eps"));
  }
  // bf16 autocast trains an MoE too.
  auto bf16 = std::make_shared<olm::Model>(config(R"("z_loss_weight": 0.01)"), "cpu", olm::ModelOptions{});
  olm::train::Trainer d(bf16, tc(R"(, "autocast_precision": "bfloat16")"));
  const auto md = d.train_batch(ids);
  EXPECT_TRUE(std::isfinite(md.loss) && std::isfinite(md.lb_loss) && std::isfinite(md.grad_norm));
  EXPECT_NEAR(md.ce_loss, ma.ce_loss, 0.05);
}

TEST(MoEConfig, BadConfigsNameTheirField) {
  const std::string base = R"({"name": "moe", "d_model": 16, "vocab_size": 32, "n_layers": 2,
    "block": {"name": "moe", "attention": {"n_heads": 2, "bias": false}, "layer_norm": {"name": "rms", "bias": false},
              "feed_forward_moe": {"num_experts": 4, "hidden_size": 8, "router": {"top_k": TOPK}CF}},
    "lm_head": {"bias": false}})";
  auto make = [&](const std::string& topk, const std::string& cf, const std::string& moe_name = "default") {
    std::string s = base;
    s.replace(s.find("TOPK"), 4, topk);
    s.replace(s.find("CF"), 2, cf + ", \"name\": \"" + moe_name + "\"");
    return olm::Config::from_json(s);
  };
  EXPECT_NO_THROW(make("2", ""));
  auto expect_error = [&](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const olm::Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
  };
  expect_error([&] { make("5", ""); }, "block.feed_forward_moe.router.top_k (5) must not exceed block.feed_forward_moe.num_experts (4)");
  expect_error([&] { make("0", ""); }, "block.feed_forward_moe.router.top_k must be positive");
  expect_error([&] { make("2", ", \"capacity_factor\": 1.5", "dropless"); }, "block.feed_forward_moe.capacity_factor");
  expect_error([&] { make("2", ", \"capacity_factor\": -1"); }, "block.feed_forward_moe.capacity_factor");
  expect_error([&] { make("2", ", \"lb_loss_granularity\": \"global\""); }, "block.feed_forward_moe.lb_loss_granularity");
  expect_error([&] { make("2", "", "sparse"); }, "block.feed_forward_moe.name");
  // MoE blocks need the MoE transformer; it runs dense blocks too, as OLMo-core's does.
  auto with_names = [](const std::string& model, const std::string& block, const std::string& ff) {
    return olm::Config::from_json(R"({"name": ")" + model + R"(", "d_model": 16, "vocab_size": 32, "n_layers": 1,
      "block": {"name": ")" + block + R"(", "attention": {"n_heads": 2}, "layer_norm": {"name": "rms"}, )" + ff + R"(},
      "lm_head": {}})");
  };
  const std::string moe_ff = R"("feed_forward_moe": {"num_experts": 2, "hidden_size": 8})";
  const std::string dense_ff = R"("feed_forward": {"hidden_size": 8})";
  expect_error([&] { with_names("default", "moe", moe_ff); }, "name: block.name 'moe' needs the MoE transformer");
  expect_error([&] { with_names("moe", "moe", dense_ff); }, "block.feed_forward: not allowed with block.name 'moe'");
  expect_error([&] { with_names("moe", "default", dense_ff + ", " + moe_ff); }, "block.feed_forward_moe: only allowed with an MoE block.name");
  expect_error([&] { with_names("moe", "moe_hybrid", moe_ff); }, "block.feed_forward: required field is missing");
  EXPECT_NO_THROW(with_names("moe", "default", dense_ff));
  const auto counts = make("2", "").num_params();
  // Per block: attention 4 * 16 * 16, two RMSNorms of 16, router 16 * 4, experts 3 * 16 * 8 * 4.
  const int64_t block = 4 * 16 * 16 + 2 * 16 + 16 * 4 + 3 * 16 * 8 * 4;
  EXPECT_EQ(counts.total, 32 * 16 + 2 * block + 16 * 32);
  EXPECT_EQ(counts.active, counts.total - 2 * 3 * 16 * 8 * 2);
  EXPECT_EQ(counts.active_non_embedding, counts.active - 32 * 16);
}

// The numbers OLMo-core 3.0.0 gives: TransformerConfig.<preset>(vocab_size=v).num_params,
// .num_non_embedding_params, .num_active_params, .num_active_non_embedding_params, and
// .build(init_device="meta").num_flops_per_token(4096) (tests/parity/moe_parity.py checks the
// same against the live library).
TEST(MoEConfig, PresetsCountLikeOLMoCore) {
  struct Row {
    const char* name;
    int64_t vocab, total, non_embedding, active, active_non_embedding, flops_4096;
  };
  for (const Row& r : {Row{"smallmoe", 100278, 564923136, 487909632, 267651840, 190638336, 1370267136},
                       Row{"smallmoe", 50304, 488163072, 449529600, 190891776, 152258304, 1139986944},
                       Row{"olmoe_1B_7B", 100278, 7123855360, 6918486016, 1486710784, 1281341440, 8493158400},
                       Row{"olmoe_1B_7B", 50304, 6919161856, 6816139264, 1282017280, 1178994688, 7879077888}}) {
    const auto config = olm::preset(r.name, r.vocab);
    const auto c = config.num_params();
    EXPECT_EQ(c.total, r.total) << r.name << " " << r.vocab;
    EXPECT_EQ(c.non_embedding, r.non_embedding) << r.name;
    EXPECT_EQ(c.active, r.active) << r.name;
    EXPECT_EQ(c.active_non_embedding, r.active_non_embedding) << r.name;
    EXPECT_EQ(config.num_flops_per_token(4096), r.flops_4096) << r.name;
    // Exact JSON and FlatBuffer round trips, with OLMo-core's field names.
    const std::string json = config.to_json();
    EXPECT_EQ(olm::Config::from_json(json).to_json(), json);
    const auto fb = config.to_flatbuffer();
    EXPECT_EQ(olm::Config::from_flatbuffer(fb.data(), fb.size()).to_flatbuffer(), fb);
    for (const char* field : {"\"name\": \"moe\"", "\"moe_reordered_norm\"", "\"feed_forward_moe\"",
                              "\"num_experts\"", "\"top_k\"", "\"lb_loss_weight\": 0.01", "\"z_loss_weight\": 0.001"})
      EXPECT_THAT(json, HasSubstr(field)) << r.name;
  }
  EXPECT_THAT(olm::preset("olmoe_1B_7B", 50304).to_json(), HasSubstr("\"dropless\""));
  EXPECT_THAT(olm::preset("smallmoe", 50304).to_json(), HasSubstr("\"shared_mlp\""));
}

// Driven by tests/parity/moe_parity.py: OLMo-core's inputs to every block's MoE, its routing
// (expert indices and weights) and its MoE outputs, and the OLMo-core weights.
TEST(MoEParity, RoutingDecisionsEqualOLMoCore) {
  const char* dir = std::getenv("OLM_MOE_PARITY_DIR");
  if (!dir) GTEST_SKIP() << "OLM_MOE_PARITY_DIR not set (run by tests/parity/moe_parity.py)";
  const std::string folder = dir;
  std::ifstream in(folder + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  olm::ModelOptions options;
  options.init_weights = false;
  olm::Model model(olm::Config::from_json(text.str()), "cpu", options);
  model.load_safetensors(folder + "/model.safetensors");
  olm::io::SafetensorsFile fixture(folder + "/routing.safetensors");
  std::map<std::string, at::Tensor> t;
  for (const auto& e : fixture.entries()) t[e.name] = fixture.read(e);
  at::NoGradGuard no_grad;
  auto& blocks = model.module().blocks();
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::string n = std::to_string(i);
    auto* moe = blocks[i]->feed_forward_moe();
    ASSERT_NE(moe, nullptr);
    const auto routing = moe->router().forward(t.at("x." + n), nullptr);
    const auto expected = t.at("indices." + n).to(at::kLong);
    ASSERT_EQ(routing.indices.sizes(), expected.sizes());
    const int64_t mismatched = routing.indices.ne(expected).sum().item<int64_t>();
    const double w = max_diff(routing.weights, t.at("weights." + n));
    const double out = max_diff(moe->forward(t.at("x." + n), nullptr), t.at("out." + n));
    std::printf("routing block %zu: %lld of %lld expert choices differ; weights max diff %.3e; MoE output max diff %.3e\n",
                i, static_cast<long long>(mismatched), static_cast<long long>(expected.numel()), w, out);
    EXPECT_EQ(mismatched, 0);
    EXPECT_LT(w, 1e-6);
    EXPECT_LT(out, 1e-5);
  }
}

// KV-cache decoding of a dropless MoE model equals one full forward (each token's expert
// output depends on that token alone). A capacity MoE does not: as in OLMo-core, its capacity
// follows the tokens of each call, so one-token steps can drop what a full pass keeps.
TEST(MoEGeneration, DroplessChunkedDecodingEqualsFullForward) {
  for (const char* block : {"moe", "moe_hybrid_reordered_norm"}) {
    const std::string ff = std::string(block) == "moe" ? "" : R"("feed_forward": {"hidden_size": 24, "bias": false},)";
    olm::Model model(olm::Config::from_json(std::string(R"({"name": "moe", "d_model": 16, "vocab_size": 40, "n_layers": 2,
      "block": {"name": ")") + block + R"(", "attention": {"n_heads": 2, "bias": false, "rope": {"theta": 10000}}, )" + ff + R"(
        "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 8, "router": {"top_k": 2},
                             "shared_mlp": {"hidden_size": 12}},
        "layer_norm": {"name": "rms", "bias": false}},
      "lm_head": {"bias": false}, "init_seed": 5})"), "cpu", {});
    auto& module = model.module();
    c10::InferenceMode guard;
    const auto ids = at::randint(40, {2, 11}, at::detail::createCPUGenerator(12), at::kLong);
    const auto full = module.forward(ids);
    for (int64_t chunk : {1, 4}) {
      auto caches = module.make_kv_caches(2, 11);
      std::vector<at::Tensor> pieces;
      for (int64_t start = 0; start < 11; start += chunk)
        pieces.push_back(module.forward(ids.slice(1, start, std::min<int64_t>(11, start + chunk)), 0, &caches));
      EXPECT_LT(max_diff(at::cat(pieces, 1), full), 1e-5) << block << " chunk " << chunk;
    }
  }
}

// Checkpoints carry the routers' score biases (a persistent buffer, as in OLMo-core's state
// dict): training on from a checkpoint equals training straight through, bit for bit.
TEST(MoETraining, ResumeWithScoreBiasIsBitExact) {
  const auto config = olm::Config::from_json(R"({"name": "moe", "d_model": 16, "vocab_size": 40, "n_layers": 2,
    "block": {"name": "moe", "attention": {"n_heads": 2, "bias": false},
      "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 8,
                           "router": {"top_k": 2, "bias_gamma": 0.05}, "z_loss_weight": 0.01},
      "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"bias": false}})");
  const auto tc = olm::train::TrainConfig::from_json(R"({"sequence_length": 8, "global_batch_size": 32,
      "rank_microbatch_size": 16, "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}})");
  auto batch = [](uint64_t seed) { return at::randint(40, {4, 8}, at::detail::createCPUGenerator(seed), at::kLong); };
  auto straight = std::make_shared<olm::Model>(config, "cpu", olm::ModelOptions{});
  olm::train::Trainer a(straight, tc);
  char tmpl[] = "/tmp/olm_moe_resume_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  for (uint64_t s = 0; s < 2; ++s) a.train_batch(batch(s));
  const auto path = olm::checkpoint::save(a, dir, {}, 3);
  for (uint64_t s = 2; s < 4; ++s) a.train_batch(batch(s));

  auto resumed = std::make_shared<olm::Model>(config, "cpu", olm::ModelOptions{});
  olm::train::Trainer b(resumed, tc);
  olm::checkpoint::load(b, path);
  for (uint64_t s = 2; s < 4; ++s) b.train_batch(batch(s));
  auto sa = straight->module().named_state(), sb = resumed->module().named_state();
  ASSERT_EQ(sa.size(), sb.size());
  bool has_bias = false;
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_TRUE(at::equal(*sa[i].tensor, *sb[i].tensor)) << sa[i].name;
    if (sa[i].name.find("score_bias") != std::string::npos) {
      has_bias = true;
      EXPECT_GT(sa[i].tensor->abs().sum().item<double>(), 0.0);  // it moved
    }
  }
  EXPECT_TRUE(has_bias);
  // (Not std::filesystem: libtorch.so interposes a broken copy of it.)
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}
