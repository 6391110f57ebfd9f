// core/nn/gated_delta_net against a float64 re-computation written here: explicit loops over
// tokens, heads and state entries (the naive gated delta rule recurrence, the causal
// convolution tap by tap, the L2 and gated RMS norms), reading the module's parameters. Only
// the dense projections use double-precision ATen matmuls.
//
// Tolerances: a float64 module agrees to rounding (1e-10); a float32 module to 1e-5 (outputs
// O(0.1-1), a few dozen recurrent steps, sums over <= 32 terms).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/error.h"
#include "core/generate.h"
#include "core/model.h"
#include "core/nn/gated_delta_net.h"
#include "core/nn/transformer.h"
#include "core/train/trainer.h"
#include "test_util.h"

using ::testing::HasSubstr;
using olm::testing::expect_error;

namespace {

at::Tensor randn(at::IntArrayRef shape, uint64_t seed, at::ScalarType dtype = at::kDouble) {
  auto g = at::detail::createCPUGenerator(seed);
  return at::randn(shape, g, at::kDouble).to(dtype);
}

using olm::testing::max_diff;

olm::GatedDeltaNetSpec spec(int64_t n_heads, int64_t n_v_heads, int64_t head_dim, double expand_v, bool neg,
                            int64_t conv_size, bool conv_bias) {
  olm::GatedDeltaNetSpec s;
  s.n_heads = n_heads;
  s.n_v_heads = n_v_heads;
  s.head_dim = head_dim;
  s.expand_v = expand_v;
  s.head_v_dim = static_cast<int64_t>(head_dim * expand_v);
  s.allow_neg_eigval = neg;
  s.conv_size = conv_size;
  s.conv_bias = conv_bias;
  return s;
}

// Random parameters in OLMo-core's ranges: projections ~0.3, A_log in log(0..16), dt_bias
// around softplus^-1(0.01..0.1), the norm weight near 1.
void randomize(olm::nn::GatedDeltaNet& m, uint64_t seed) {
  at::NoGradGuard g;
  for (auto& p : m.named_parameters()) {
    const auto dtype = p.tensor->scalar_type();
    if (p.name == "A_log") {
      p.tensor->copy_((randn(p.tensor->sizes(), seed++).abs() * 4 + 0.5).log().to(dtype));
    } else if (p.name == "dt_bias") {
      p.tensor->copy_((randn(p.tensor->sizes(), seed++) * 0.5 - 3.0).to(dtype));
    } else if (p.name == "o_norm.weight") {
      p.tensor->copy_((1 + 0.2 * randn(p.tensor->sizes(), seed++)).to(dtype));
    } else {
      p.tensor->copy_((randn(p.tensor->sizes(), seed++) * 0.3).to(dtype));
    }
  }
}

at::Tensor param(olm::nn::Module& m, const std::string& name) {
  for (auto& p : m.named_parameters())
    if (p.name == name) return p.tensor->detach().to(at::kDouble);
  return {};
}

double silu(double x) { return x / (1 + std::exp(-x)); }
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

// SiLU(depthwise causal conv) with explicit taps; doc (B, T) positions inside documents or
// undefined. x (B, T, C) double.
at::Tensor ref_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& doc) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), K = w.size(2);
  auto out = at::zeros_like(x);
  auto xa = x.accessor<double, 3>();
  auto oa = out.accessor<double, 3>();
  auto wa = w.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = bias.defined() ? bias[c].item<double>() : 0.0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t lag = K - 1 - j, src = t - lag;
          if (src < 0) continue;
          if (doc.defined() && doc[b][t].item<int64_t>() < lag) continue;
          acc += wa[c][0][j] * xa[b][src][c];
        }
        oa[b][t][c] = silu(acc);
      }
  return out;
}

// The whole GatedDeltaNet forward in float64 with the naive per-token recurrence.
at::Tensor reference(olm::nn::GatedDeltaNet& m, const at::Tensor& x_in, const at::Tensor& doc = at::Tensor()) {
  const auto& s = m.spec();
  const auto x = x_in.to(at::kDouble);
  const int64_t B = x.size(0), T = x.size(1), H = s.n_v_heads, K = s.head_dim, V = s.head_v_dim;
  auto lin = [&](const std::string& name) { return at::matmul(x, param(m, name + ".weight").t()); };
  const auto q = ref_conv(lin("w_q"), param(m, "q_conv1d.weight"), param(m, "q_conv1d.bias"), doc);
  const auto k = ref_conv(lin("w_k"), param(m, "k_conv1d.weight"), param(m, "k_conv1d.bias"), doc);
  const auto v = ref_conv(lin("w_v"), param(m, "v_conv1d.weight"), param(m, "v_conv1d.bias"), doc);
  const auto a = lin("w_a"), bl = lin("w_b"), gate = lin("w_g");
  const auto A_log = param(m, "A_log"), dt_bias = param(m, "dt_bias"), w_norm = param(m, "o_norm.weight");
  auto o = at::zeros({B, T, H * V}, at::kDouble);
  auto qa = q.accessor<double, 3>(), ka = k.accessor<double, 3>(), va = v.accessor<double, 3>();
  auto oa = o.accessor<double, 3>();
  const int64_t group = s.n_v_heads / s.n_heads;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / group;  // GVA: value head h reads key head h / group
      std::vector<double> S(K * V, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        if (doc.defined() && doc[b][t].item<int64_t>() == 0) std::fill(S.begin(), S.end(), 0.0);
        // L2-normalized q (scaled by K^-1/2) and k, eps 1e-6 inside the square root.
        std::vector<double> qv(K), kv(K);
        double qn = 0, kn = 0;
        for (int64_t i = 0; i < K; ++i) {
          qv[i] = qa[b][t][hk * K + i];
          kv[i] = ka[b][t][hk * K + i];
          qn += qv[i] * qv[i];
          kn += kv[i] * kv[i];
        }
        for (int64_t i = 0; i < K; ++i) {
          qv[i] /= std::sqrt(qn + 1e-6) * std::sqrt(static_cast<double>(K));
          kv[i] /= std::sqrt(kn + 1e-6);
        }
        double beta = sigmoid(bl[b][t][h].item<double>());
        if (s.allow_neg_eigval) beta *= 2;
        const double g = -std::exp(A_log[h].item<double>()) * softplus(a[b][t][h].item<double>() + dt_bias[h].item<double>());
        for (auto& e : S) e *= std::exp(g);
        for (int64_t j = 0; j < V; ++j) {
          double kS = 0;
          for (int64_t i = 0; i < K; ++i) kS += kv[i] * S[i * V + j];
          const double u = beta * (va[b][t][h * V + j] - kS);
          for (int64_t i = 0; i < K; ++i) S[i * V + j] += kv[i] * u;
        }
        // o = S^T q, then the gated RMS norm over the head's V entries.
        std::vector<double> ov(V, 0.0);
        double ms = 0;
        for (int64_t j = 0; j < V; ++j) {
          for (int64_t i = 0; i < K; ++i) ov[j] += qv[i] * S[i * V + j];
          ms += ov[j] * ov[j] / V;
        }
        for (int64_t j = 0; j < V; ++j)
          oa[b][t][h * V + j] = ov[j] / std::sqrt(ms + s.norm_eps) * w_norm[j].item<double>() *
                                silu(gate[b][t][h * V + j].item<double>());
      }
    }
  return at::matmul(o, param(m, "w_out.weight").t());
}

struct Case {
  const char* name;
  olm::GatedDeltaNetSpec s;
};

std::vector<Case> cases() {
  return {{"plain", spec(2, 2, 4, 2.0, true, 4, false)},
          {"gva", spec(2, 4, 4, 1.5, true, 4, false)},
          {"no_neg_eigval_conv_bias", spec(1, 3, 8, 1.0, false, 3, true)},
          {"conv_size_1", spec(2, 2, 4, 0.5, true, 1, false)}};
}

}  // namespace

TEST(GatedDeltaNet, ParameterNamesAndShapesFollowOLMoCore) {
  const auto s = spec(2, 4, 4, 1.5, true, 4, true);  // key_dim 8, head_v_dim 6, value_dim 24
  olm::nn::GatedDeltaNet m(16, s, at::TensorOptions().dtype(at::kFloat));
  std::vector<std::pair<std::string, std::vector<int64_t>>> got;
  for (auto& p : m.named_parameters()) got.emplace_back(p.name, p.tensor->sizes().vec());
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"A_log", {4}}, {"dt_bias", {4}}, {"w_q.weight", {8, 16}}, {"w_k.weight", {8, 16}},
      {"w_v.weight", {24, 16}}, {"w_a.weight", {4, 16}}, {"w_b.weight", {4, 16}},
      {"q_conv1d.weight", {8, 1, 4}}, {"q_conv1d.bias", {8}}, {"k_conv1d.weight", {8, 1, 4}},
      {"k_conv1d.bias", {8}}, {"v_conv1d.weight", {24, 1, 4}}, {"v_conv1d.bias", {24}},
      {"w_g.weight", {24, 16}}, {"o_norm.weight", {6}}, {"w_out.weight", {16, 24}}};
  EXPECT_EQ(got, want);
  int64_t n = 0;
  for (auto& p : m.named_parameters()) n += p.tensor->numel();
  EXPECT_EQ(n, s.num_params(16));
}

TEST(GatedDeltaNet, MatchesFloat64NaiveRecurrence) {
  for (const auto& c : cases()) {
    for (auto dtype : {at::kDouble, at::kFloat}) {
      olm::nn::GatedDeltaNet m(12, c.s, at::TensorOptions().dtype(dtype));
      randomize(m, 100);
      const auto x = randn({2, 9, 12}, 7, dtype);
      at::Tensor y;
      {
        at::NoGradGuard g;
        y = m.forward(x);
      }
      const auto ref = reference(m, x);
      const double d = max_diff(y, ref);
      std::printf("[gdn] %s %s max |olm - float64 naive| = %.3g (max |ref| %.3g)\n", c.name,
                  dtype == at::kDouble ? "float64" : "float32", d, ref.abs().max().item<double>());
      EXPECT_LT(d, dtype == at::kDouble ? 1e-10 : 1e-5) << c.name;
      EXPECT_EQ(y.scalar_type(), dtype);
    }
  }
}

// Intra-document masking: the state restarts and the convolutions stop at document starts,
// so a packed row equals its documents run one by one.
TEST(GatedDeltaNet, DocumentMaskingRestartsStateAndConvolution) {
  const auto s = spec(2, 4, 4, 2.0, true, 4, true);
  olm::nn::GatedDeltaNet m(12, s, at::TensorOptions().dtype(at::kDouble));
  randomize(m, 3);
  at::NoGradGuard g;
  const auto x = randn({2, 10, 12}, 5);
  // Row 0: documents of 3, 5, 2 tokens; row 1: 6, 4.
  const auto cu = at::tensor(std::vector<int64_t>{0, 3, 8, 10, 16, 20}, at::kLong);
  const auto doc = olm::nn::document_positions(cu, 2, 10);
  const auto y = m.forward(x, doc);
  EXPECT_LT(max_diff(y, reference(m, x, doc)), 1e-10);
  double worst = 0;
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> docs = {{{0, 3}, {3, 5}, {8, 2}}, {{0, 6}, {6, 4}}};
  for (int64_t b = 0; b < 2; ++b)
    for (auto [start, len] : docs[b]) {
      const auto alone = m.forward(x.narrow(0, b, 1).narrow(1, start, len));
      worst = std::max(worst, max_diff(alone, y.narrow(0, b, 1).narrow(1, start, len)));
    }
  std::printf("[gdn] packed vs per-document max diff %.3g\n", worst);
  EXPECT_LT(worst, 1e-12);
  // Without masking the second document sees the first.
  EXPECT_GT(max_diff(m.forward(x), y), 1e-4);
}

// Autograd through the recurrence: analytic gradients equal central differences (float64)
// for parameters on every path (gate, beta, decay, convolutions, norm).
TEST(GatedDeltaNet, GradientsMatchFiniteDifferences) {
  const auto s = spec(2, 4, 4, 1.5, true, 3, true);
  olm::nn::GatedDeltaNet m(8, s, at::TensorOptions().dtype(at::kDouble));
  randomize(m, 11);
  const auto x = randn({2, 6, 8}, 12);
  const auto w = randn({2, 6, 8}, 13);
  for (auto& p : m.named_parameters()) p.tensor->requires_grad_(true);
  (m.forward(x) * w).sum().backward();
  double worst = 0;
  for (auto& p : m.named_parameters()) {
    ASSERT_TRUE(p.tensor->grad().defined()) << p.name;
    EXPECT_TRUE(at::isfinite(p.tensor->grad()).all().item<bool>()) << p.name;
    EXPECT_GT(p.tensor->grad().abs().max().item<double>(), 0.0) << p.name;
    // Probe two entries of each parameter.
    for (int64_t idx : {int64_t{0}, p.tensor->numel() - 1}) {
      at::NoGradGuard g;
      auto flat = p.tensor->view({-1});
      // o_norm.weight stays float32 (as fla's norm): step by what the tensor can store.
      const double orig = flat[idx].item<double>(), h = p.tensor->scalar_type() == at::kDouble ? 1e-6 : 1e-3;
      flat[idx].fill_(orig + h);
      const double x_up = flat[idx].item<double>(), up = (m.forward(x) * w).sum().item<double>();
      flat[idx].fill_(orig - h);
      const double x_down = flat[idx].item<double>(), down = (m.forward(x) * w).sum().item<double>();
      flat[idx].fill_(orig);
      const double numeric = (up - down) / (x_up - x_down);
      const double analytic = p.tensor->grad().view({-1})[idx].item<double>();
      const double err = std::abs(numeric - analytic) / std::max(1.0, std::abs(numeric));
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-6) << p.name << "[" << idx << "]: " << analytic << " vs " << numeric;
    }
  }
  std::printf("[gdn] worst relative gradient error vs central differences %.3g\n", worst);
}

namespace {

std::string gdn_config(const std::string& mixer, const std::string& extra = "") {
  return R"({"d_model": 16, "vocab_size": 40, "n_layers": 2,
    "block": {"attention": )" + mixer + R"(, "feed_forward": {"hidden_size": 32, "bias": false},
      "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"bias": false})" + extra + "}";
}

const std::string kMixer =
    R"({"name": "gated_delta_net", "n_heads": 2, "n_v_heads": 4, "head_dim": 4, "expand_v": 1.5, "allow_neg_eigval": false, "conv_size": 3, "conv_bias": true, "norm_eps": 1e-6})";

}  // namespace

TEST(GatedDeltaNetConfig, RoundTripsAndCountsParamsAndFlops) {
  const auto config = olm::Config::from_json(gdn_config(kMixer));
  const auto again = olm::Config::from_json(config.to_json());
  EXPECT_EQ(again.to_json(), config.to_json());
  const auto fb = olm::Config::from_flatbuffer(config.to_flatbuffer().data(), config.to_flatbuffer().size());
  EXPECT_EQ(fb.to_json(), config.to_json());
  ASSERT_TRUE(config.spec().blocks[0].gated_delta_net.has_value());
  const auto& g = *config.spec().blocks[1].gated_delta_net;
  EXPECT_EQ(g.n_heads, 2);
  EXPECT_EQ(g.n_v_heads, 4);
  EXPECT_EQ(g.head_v_dim, 6);
  EXPECT_FALSE(g.allow_neg_eigval);
  EXPECT_EQ(g.conv_size, 3);
  EXPECT_TRUE(g.conv_bias);
  EXPECT_DOUBLE_EQ(g.norm_eps, 1e-6);
  // Defaults: n_v_heads = n_heads, head_dim = d_model / n_heads, expand_v 2, conv 4, neg eigval.
  const auto d = olm::Config::from_json(gdn_config(R"({"name": "gated_delta_net", "n_heads": 4})"));
  const auto& dg = *d.spec().blocks[0].gated_delta_net;
  EXPECT_EQ(dg.n_v_heads, 4);
  EXPECT_EQ(dg.head_dim, 4);
  EXPECT_EQ(dg.head_v_dim, 8);
  EXPECT_TRUE(dg.allow_neg_eigval);
  EXPECT_EQ(dg.conv_size, 4);
  EXPECT_FALSE(dg.conv_bias);

  // GatedDeltaNetConfig.num_params, by hand: d=16, key_dim 8, value_dim 24, n_v_heads 4.
  const int64_t mixer = 16 * 8 * 2 + 16 * 24 * 2 + 16 * 4 * 2 + 24 * 16 + 4 * 2 + 3 * (8 + 8 + 24) + (8 + 8 + 24) + 6;
  EXPECT_EQ(g.num_params(16), mixer);
  olm::Model model(config, "cpu", olm::ModelOptions{});
  EXPECT_EQ(model.num_params(), config.num_params().total);
  int64_t counted = 0;
  for (auto& p : model.module().named_parameters()) counted += p.tensor->numel();
  EXPECT_EQ(counted, config.num_params().total);
  // GatedDeltaNet.num_flops_per_token: 6 * projection weights + 6 * conv taps + 24 * state.
  const int64_t linear = 16 * 8 * 2 + 16 * 24 * 2 + 16 * 4 * 2 + 24 * 16;
  EXPECT_EQ(g.num_flops_per_token(16), 6 * linear + 6 * 3 * 40 + 24 * 4 * 4 * 6);
  const int64_t ff = 6 * 3 * 16 * 32, head = 6 * 16 * 40;  // lm_head: w_out, no norm, no bias
  EXPECT_EQ(config.num_flops_per_token(64), 2 * (g.num_flops_per_token(16) + ff) + head);
  EXPECT_EQ(config.num_flops_per_token(64), config.num_flops_per_token(8));  // linear in seq_len
}

TEST(GatedDeltaNetConfig, BadFieldsAreNamed) {
  using olm::ErrorCode;
  auto bad = [](const std::string& mixer, const std::string& needle, const std::string& extra = "") {
    expect_error([&] { olm::Config::from_json(gdn_config(mixer, extra)); }, ErrorCode::kInvalidConfig, needle);
  };
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "n_v_heads": 3})", "block.attention.n_v_heads (3) must be a multiple of block.attention.n_heads (2)");
  bad(R"({"name": "gated_delta_net", "n_heads": 4, "n_v_heads": 2})", "block.attention.n_v_heads");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "head_dim": 3, "expand_v": 1.5})", "block.attention.expand_v");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "expand_v": 0})", "block.attention.expand_v");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "conv_size": 0})", "block.attention.conv_size");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "norm_eps": -1})", "block.attention.norm_eps");
  bad(R"({"name": "gated_delta_net", "n_heads": 3})", "block.attention.n_heads");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "rope": {"theta": 10000}})", "block.attention.rope: not supported by block.attention.name \"gated_delta_net\"");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "n_kv_heads": 1})", "block.attention.n_kv_heads");
  bad(R"({"name": "gated_delta_net", "n_heads": 2, "sliding_window": {"pattern": [4]}})", "block.attention.sliding_window");
  bad(R"({"n_heads": 2, "n_v_heads": 4})", "block.attention.n_v_heads: only allowed with block.attention.name \"gated_delta_net\"");
  bad(R"({"n_heads": 2, "conv_size": 4})", "block.attention.conv_size");
  bad(R"({"name": "gated_delta_net", "n_heads": 2})", "init_method", R"(, "init_method": "fan_in")");
}

// A training step through core/train reaches every GatedDeltaNet parameter and lowers the loss.
TEST(GatedDeltaNetTraining, StepsUpdateEveryParameter) {
  auto model = std::make_shared<olm::Model>(olm::Config::from_json(gdn_config(kMixer, R"(, "init_method": "llama")")),
                                            "cpu", olm::ModelOptions{});
  std::map<std::string, at::Tensor> before;
  for (auto& p : model->module().named_parameters()) before[p.name] = p.tensor->detach().clone();
  const auto tc = olm::train::TrainConfig::from_json(
      R"({"sequence_length": 8, "global_batch_size": 32, "max_steps": 10, "optimizer": {"name": "adamw", "lr": 0.01}})");
  olm::train::Trainer trainer(model, tc);
  const auto ids = at::randint(40, {4, 8}, at::detail::createCPUGenerator(3), at::kLong);
  const auto cu = at::tensor(std::vector<int64_t>{0, 5, 8, 16, 20, 24, 32}, at::kLong);
  double first = 0, last = 0;
  for (int step = 0; step < 8; ++step) {
    const auto m = step % 2 ? trainer.train_batch(ids, at::Tensor(), cu) : trainer.train_batch(ids);
    ASSERT_TRUE(std::isfinite(m.ce_loss));
    if (step == 0) first = m.ce_loss;
    if (step == 6) last = m.ce_loss;
  }
  std::printf("[gdn] training loss %.4f -> %.4f\n", first, last);
  EXPECT_LT(last, first);
  for (auto& p : model->module().named_parameters())
    EXPECT_GT(max_diff(*p.tensor, before[p.name]), 0.0) << p.name << " did not move";
}

// The cache carries a GatedDeltaNet layer across calls: a sequence fed as a prompt (the
// chunked form from the cached state) and then token by token (the recurrence), or in
// pieces of 3, gives the outputs of one forward. float64, so any slip in the state or the
// convolution inputs shows far above rounding (1e-12); 70 tokens cross a 64-token chunk.
TEST(GatedDeltaNetCache, PiecesEqualOneForward) {
  for (const auto& c : cases()) {
    olm::nn::GatedDeltaNet m(12, c.s, at::TensorOptions().dtype(at::kDouble));
    randomize(m, 40);
    at::NoGradGuard g;
    const auto x = randn({2, 70, 12}, 41);
    const auto full = m.forward(x);
    for (const auto& pieces : std::vector<std::vector<int64_t>>{{5, 1, 1, 1, 62}, {67, 1, 1, 1}, {3}}) {
      auto cache = m.make_cache(2, at::kDouble, at::kCPU);
      std::vector<at::Tensor> outs;
      for (int64_t start = 0, i = 0; start < 70; ++i) {
        const int64_t len = std::min<int64_t>(pieces[std::min<size_t>(i, pieces.size() - 1)], 70 - start);
        outs.push_back(m.forward(x.narrow(1, start, len), at::Tensor(), &cache));
        start += len;
      }
      EXPECT_EQ(cache.length, 70);
      const double d = max_diff(at::cat(outs, 1), full);
      EXPECT_LT(d, 1e-12) << c.name << " first piece " << pieces[0];
    }
  }
  // A cache cannot be combined with document masking (positions restart inside the input).
  olm::nn::GatedDeltaNet m(12, cases()[0].s, at::TensorOptions().dtype(at::kDouble));
  auto cache = m.make_cache(1, at::kDouble, at::kCPU);
  expect_error([&] { m.forward(randn({1, 3, 12}, 1), at::zeros({1, 3}, at::kLong), &cache); },
               olm::ErrorCode::kInvalidArgument, "document masking");
}

// A final state handed back by either form, passed in as the next call's initial state,
// continues the sequence exactly (fla's initial_state / output_final_state).
TEST(GatedDeltaRule, StateHandOffContinuesTheSequence) {
  const int64_t B = 2, T = 11, H = 3, K = 5, V = 4;
  auto unit = [](const at::Tensor& t) { return t / t.norm(2, -1, true); };
  const auto q = unit(randn({B, T, H, K}, 31)) * 0.5, k = unit(randn({B, T, H, K}, 32));
  const auto v = randn({B, T, H, V}, 33);
  const auto g = -at::softplus(randn({B, T, H}, 34)) * 0.7;
  const auto beta = at::sigmoid(randn({B, T, H}, 35)) * 2;
  at::Tensor final_state;
  const auto whole = olm::nn::gated_delta_rule_recurrent(q, k, v, g, beta, at::Tensor(), &final_state);
  for (const int64_t split : {1, 4, 10}) {
    auto first = [&](const at::Tensor& t) { return t.narrow(1, 0, split); };
    auto rest = [&](const at::Tensor& t) { return t.narrow(1, split, T - split); };
    at::Tensor S;
    const auto a = olm::nn::gated_delta_rule_chunked(first(q), first(k), first(v), first(g), first(beta), at::Tensor(), 4, &S);
    const auto b = olm::nn::gated_delta_rule_recurrent(rest(q), rest(k), rest(v), rest(g), rest(beta), at::Tensor(), &S);
    EXPECT_LT(max_diff(at::cat({a, b}, 1), whole), 1e-12) << "split " << split;
    EXPECT_LT(max_diff(S, final_state), 1e-12) << "split " << split;
    at::Tensor S2;
    (void)olm::nn::gated_delta_rule_recurrent(first(q), first(k), first(v), first(g), first(beta), at::Tensor(), &S2);
    const auto c = olm::nn::gated_delta_rule_chunked(rest(q), rest(k), rest(v), rest(g), rest(beta), at::Tensor(), 4, &S2);
    EXPECT_LT(max_diff(c, whole.narrow(1, split, T - split)), 1e-12) << "split " << split;
    EXPECT_LT(max_diff(S2, final_state), 1e-12) << "split " << split;
  }
  // A document start at the first token drops the state handed in.
  at::Tensor S = at::ones({B, H, K, V}, at::kDouble);
  auto reset = at::zeros({B, T}, at::kBool);
  reset.select(1, 0).fill_(true);
  EXPECT_LT(max_diff(olm::nn::gated_delta_rule_chunked(q, k, v, g, beta, reset, 4, &S), whole), 1e-12);
}

namespace {

std::string mixer(bool allow_neg_eigval) {
  return R"({"name": "gated_delta_net", "n_heads": 2, "n_v_heads": 4, "head_dim": 4, "expand_v": 1.5, "allow_neg_eigval": )" +
         std::string(allow_neg_eigval ? "true" : "false") + R"(, "conv_size": 3, "conv_bias": true, "norm_eps": 1e-6})";
}

// Attention and GatedDeltaNet layers in one model, the second GatedDeltaNet in a parallel block.
std::string hybrid_config(bool allow_neg_eigval) {
  const std::string rest = R"(, "feed_forward": {"hidden_size": 32, "bias": false},
      "layer_norm": {"name": "rms", "bias": false}})";
  return R"({"d_model": 16, "vocab_size": 40, "n_layers": 4,
    "named_blocks": [{"name": "gdn", "block": {"attention": )" + mixer(allow_neg_eigval) + rest + R"(},
      {"name": "gdn_parallel", "block": {"name": "parallel", "attention": )" + mixer(allow_neg_eigval) + rest + R"(},
      {"name": "attn", "block": {"attention": {"n_heads": 2, "bias": false, "rope": {"theta": 10000}})" + rest + R"(}],
    "block_pattern": ["gdn", "attn", "gdn_parallel", "attn"],
    "lm_head": {"bias": false}})";
}

// The model's GatedDeltaNet layers with random parameters in OLMo-core's ranges (the init's
// are small enough that the state would barely matter).
std::unique_ptr<olm::Model> decoding_model(const std::string& json) {
  auto model = std::make_unique<olm::Model>(olm::Config::from_json(json), "cpu", olm::ModelOptions{});
  uint64_t seed = 60;
  for (auto& block : model->module().blocks())
    if (auto* gdn = block->gated_delta_net()) randomize(*gdn, seed += 100);
  return model;
}

struct DecodingCase {
  std::string name, json;
};

std::vector<DecodingCase> decoding_cases() {
  return {{"gdn", gdn_config(mixer(false))},
          {"gdn_neg_eigval", gdn_config(mixer(true))},
          {"hybrid", hybrid_config(false)},
          {"hybrid_neg_eigval", hybrid_config(true)}};
}

}  // namespace

// Generation's path: a prompt through the caches in one call, then one token per call (or
// pieces of 3 from the start), gives the full forward's logits at every position. float32 logits of
// magnitude ~1; the two sides differ only in summation order (chunked vs token-by-token state
// updates over 70 tokens, SDPA over cached keys), a few ulps per step, so 1e-5 absolute is
// generous (GatedDeltaNetCache.PiecesEqualOneForward shows the float64 layer exact to 1e-12).
TEST(GatedDeltaNetGenerate, CachedDecodingEqualsFullForward) {
  for (const auto& c : decoding_cases()) {
    auto model = decoding_model(c.json);
    auto& module = model->module();
    c10::InferenceMode guard;
    const auto ids = at::randint(40, {2, 70}, at::detail::createCPUGenerator(9), at::kLong);
    const auto full = module.forward(ids);
    // Prompt 62: its single-token steps cross the 64-token chunk edge; single steps right
    // after short prompts are GatedDeltaNetCache.PiecesEqualOneForward's and the greedy test's.
    for (const int64_t prompt : {int64_t{62}, int64_t{0}}) {
      auto caches = module.make_kv_caches(2, 70);
      std::vector<at::Tensor> pieces;
      // prompt 0: every call takes 3 tokens.
      if (prompt > 0) pieces.push_back(module.forward(ids.narrow(1, 0, prompt), 0, &caches));
      for (int64_t t = prompt; t < 70;) {
        const int64_t len = prompt > 0 ? 1 : std::min<int64_t>(3, 70 - t);
        pieces.push_back(module.forward(ids.narrow(1, t, len), 0, &caches));
        t += len;
      }
      const double d = max_diff(at::cat(pieces, 1), full);
      std::printf("[gdn] %s prompt %lld: max |cached - full| float32 logits = %.3g (max |logit| %.3g)\n",
                  c.name.c_str(), static_cast<long long>(prompt), d, full.abs().max().item<double>());
      EXPECT_LT(d, 1e-5) << c.name << " prompt " << prompt;
    }
  }
}

TEST(GatedDeltaNetGenerate, GreedyWithAndWithoutCacheAgree) {
  for (const auto& c : decoding_cases()) {
    auto model = decoding_model(c.json);
    const auto prompt = at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5}, at::kLong);
    olm::GenerateOptions opts;
    opts.max_new_tokens = 24;
    opts.temperature = 0;
    const auto cached = olm::generate(*model, prompt, opts);
    opts.use_kv_cache = false;
    const auto uncached = olm::generate(*model, prompt, opts);
    EXPECT_EQ(cached, uncached) << c.name;
    EXPECT_EQ(cached.size(), 24u);
    // Not a degenerate model that repeats one token.
    EXPECT_GT(std::set<int64_t>(cached.begin(), cached.end()).size(), 2u) << c.name;
  }
}

// The init follows GatedDeltaNet.init_weights' ranges.
TEST(GatedDeltaNetInit, ALogAndDtBiasRanges) {
  olm::Model model(olm::Config::from_json(gdn_config(kMixer)), "cpu", olm::ModelOptions{});
  auto* gdn = model.module().blocks()[0]->gated_delta_net();
  ASSERT_NE(gdn, nullptr);
  const auto A = gdn->A_log().exp();
  EXPECT_GE(A.min().item<double>(), 0.0);
  EXPECT_LE(A.max().item<double>(), 16.0);
  const auto dt = at::softplus(gdn->dt_bias());
  EXPECT_GE(dt.min().item<double>(), 1e-4 - 1e-9);
  EXPECT_LE(dt.max().item<double>(), 0.1 + 1e-6);
  EXPECT_DOUBLE_EQ(gdn->o_norm().weight().min().item<double>(), 1.0);
  EXPECT_LT(gdn->q_conv1d().weight().abs().max().item<double>(), 3 * 0.02 + 1e-7);
}

// The chunked (WY) form equals the token-by-token recurrence: outputs and gradients, for chunk
// sizes that do and do not divide T, with document starts inside and at chunk edges.
TEST(GatedDeltaRule, ChunkedEqualsRecurrent) {
  const int64_t B = 2, T = 13, H = 3, K = 5, V = 4;
  auto unit = [](const at::Tensor& t) { return t / t.norm(2, -1, true); };
  const auto q = unit(randn({B, T, H, K}, 1)) * 0.5, k = unit(randn({B, T, H, K}, 2));
  const auto v = randn({B, T, H, V}, 3);
  const auto g = -at::softplus(randn({B, T, H}, 4)) * 0.7;
  const auto beta = at::sigmoid(randn({B, T, H}, 5)) * 2;
  auto reset = at::zeros({B, T}, at::kBool);
  reset.select(1, 0).fill_(true);
  reset[0][4] = true;   // a start at a chunk edge for chunk 4
  reset[1][6] = true;
  reset[1][7] = true;   // a one-token document
  double worst = 0, worst_grad = 0;
  for (const bool with_reset : {false, true}) {
    const auto r = with_reset ? reset : at::Tensor();
    std::vector<at::Tensor> leaves = {q.clone().requires_grad_(), k.clone().requires_grad_(), v.clone().requires_grad_(),
                                      g.clone().requires_grad_(), beta.clone().requires_grad_()};
    const auto w = randn({B, T, H, V}, 9);
    auto ref = olm::nn::gated_delta_rule_recurrent(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], r);
    (ref * w).sum().backward();
    std::vector<at::Tensor> ref_grads;
    for (auto& l : leaves) ref_grads.push_back(l.grad().clone());
    for (int64_t chunk : {1, 4, 5, 13, 64}) {
      for (auto& l : leaves) l.mutable_grad().zero_();
      auto out = olm::nn::gated_delta_rule_chunked(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], r, chunk);
      worst = std::max(worst, max_diff(out, ref));
      EXPECT_LT(max_diff(out, ref), 1e-12) << "chunk " << chunk << " reset " << with_reset;
      (out * w).sum().backward();
      for (size_t i = 0; i < leaves.size(); ++i) {
        worst_grad = std::max(worst_grad, max_diff(leaves[i].grad(), ref_grads[i]));
        EXPECT_LT(max_diff(leaves[i].grad(), ref_grads[i]), 1e-11) << "input " << i << " chunk " << chunk;
      }
    }
  }
  std::printf("[gdn] chunked vs recurrent (float64): outputs %.3g, gradients %.3g\n", worst, worst_grad);
  // float32 with 64-token chunks over a longer sequence.
  const auto T2 = 150;
  const auto q2 = unit(randn({1, T2, 2, 8}, 11)).to(at::kFloat), k2 = unit(randn({1, T2, 2, 8}, 12)).to(at::kFloat);
  const auto v2 = randn({1, T2, 2, 8}, 13, at::kFloat);
  const auto g2 = (-at::softplus(randn({1, T2, 2}, 14)) * 0.1).to(at::kFloat);
  const auto b2 = at::sigmoid(randn({1, T2, 2}, 15)).to(at::kFloat);
  const auto r64 = olm::nn::gated_delta_rule_recurrent(q2.to(at::kDouble), k2.to(at::kDouble), v2.to(at::kDouble),
                                                       g2.to(at::kDouble), b2.to(at::kDouble));
  const double d32 = max_diff(olm::nn::gated_delta_rule_chunked(q2, k2, v2, g2, b2), r64);
  std::printf("[gdn] chunked float32 vs recurrent float64, T=150: %.3g\n", d32);
  EXPECT_LT(d32, 1e-5);
}

// Under the trainer's bf16 autocast the rule still multiplies in float32.
TEST(GatedDeltaRule, IgnoresAutocast) {
  const auto q = randn({1, 20, 2, 8}, 21, at::kFloat) * 0.3, k = randn({1, 20, 2, 8}, 22, at::kFloat) * 0.3;
  const auto v = randn({1, 20, 2, 8}, 23, at::kFloat);
  const auto g = -at::softplus(randn({1, 20, 2}, 24, at::kFloat)), beta = at::sigmoid(randn({1, 20, 2}, 25, at::kFloat));
  const auto plain = olm::nn::gated_delta_rule_chunked(q, k, v, g, beta, at::Tensor(), 8);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  const auto cast = olm::nn::gated_delta_rule_chunked(q, k, v, g, beta, at::Tensor(), 8);
  const auto cast_rec = olm::nn::gated_delta_rule_recurrent(q, k, v, g, beta);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  EXPECT_EQ(cast.scalar_type(), at::kFloat);
  EXPECT_EQ(max_diff(cast, plain), 0.0);
  EXPECT_LT(max_diff(cast_rec, plain), 1e-5);
}

// bf16 autocast and full activation checkpointing also train a GatedDeltaNet model.
TEST(GatedDeltaNetTraining, AutocastAndActivationCheckpointing) {
  const auto ids = at::randint(40, {4, 8}, at::detail::createCPUGenerator(5), at::kLong);
  for (const std::string extra : {R"(, "autocast_precision": "bfloat16")", R"(, "ac_mode": "full")"}) {
    auto model = std::make_shared<olm::Model>(olm::Config::from_json(gdn_config(kMixer)), "cpu", olm::ModelOptions{});
    olm::train::Trainer trainer(model, olm::train::TrainConfig::from_json(
        R"({"sequence_length": 8, "global_batch_size": 32, "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01})" + extra + "}"));
    double first = 0, last = 0;
    for (int step = 0; step < 4; ++step) {
      const auto m = trainer.train_batch(ids);
      ASSERT_TRUE(std::isfinite(m.ce_loss)) << extra;
      (step == 0 ? first : last) = m.ce_loss;
    }
    EXPECT_LT(last, first) << extra;
  }
}
