#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "core/nn/transformer.h"

namespace olm::nn {

void trunc_normal_(at::Tensor& t, double std, at::Generator& generator) {
  // torch.nn.init._no_grad_trunc_normal_ with mean 0 and bounds [-3 std, 3 std].
  const double a = -3 * std, b = 3 * std;
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = norm_cdf(a / std), u = norm_cdf(b / std);
  t.uniform_(2 * l - 1, 2 * u - 1, generator);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.add_(0.0);
  t.clamp_(a, b);
}

namespace {

void init_linear(Linear& m, double std, at::Generator& generator) {
  trunc_normal_(m.weight(), std, generator);
  if (m.bias()) m.bias()->zero_();
}

}  // namespace

void init_weights(Transformer& model) {
  const ModelSpec& spec = model.spec();
  const std::string& method = spec.init_method;
  at::NoGradGuard no_grad;
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(spec.init_seed));

  // Embeddings.
  const double inv_sqrt_d = std::pow(static_cast<double>(spec.d_model), -0.5);
  if (method == "llama" || method == "llama_depth") {
    model.embeddings().normal_(0.0, 1.0, generator);
  } else if (method == "normalized") {
    model.embeddings().normal_(0.0, inv_sqrt_d, generator);
  } else if (method == "fan_in") {
    model.embeddings().normal_(0.0, spec.embed_scale ? 1.0 / *spec.embed_scale : 1.0, generator);
  } else {
    trunc_normal_(model.embeddings(), spec.embedding_init_std, generator);
  }
  // OLM's learned position table (OLMo-core has none): drawn next, like the token table.
  if (at::Tensor* positions = model.position_embeddings())
    trunc_normal_(*positions, spec.embedding_init_std, generator);

  const double n_blocks = static_cast<double>(spec.n_layers);
  for (size_t i = 0; i < model.blocks().size(); ++i) {
    auto& block = *model.blocks()[i];
    const double depth = static_cast<double>(i + 1);
    // OLMo-core's "normalized" replaces the base std by 1/sqrt(d_model) for the input
    // projections and then derives the output projections' std from that replacement.
    const double std = method == "normalized" ? inv_sqrt_d : spec.init_std;
    if (GatedDeltaNet* gdn = block.gated_delta_net()) {
      // GatedDeltaNet.init_weights (fan_in is refused by the config): the six input
      // projections, the three convolutions, A_log = log U(0, 16), dt_bias = softplus^-1 of a
      // log-uniform dt in [0.001, 0.1] floored at 1e-4, then w_out with the depth-scaled std.
      for (Linear* w : {&gdn->w_q(), &gdn->w_k(), &gdn->w_v(), &gdn->w_a(), &gdn->w_b(), &gdn->w_g()})
        init_linear(*w, std, generator);
      for (CausalConv1d* c : {&gdn->q_conv1d(), &gdn->k_conv1d(), &gdn->v_conv1d()}) {
        trunc_normal_(c->weight(), std, generator);
        if (c->bias()) c->bias()->zero_();
      }
      gdn->A_log().uniform_(0, 16, generator);
      gdn->A_log().log_();
      const double dt_min = 0.001, dt_max = 0.1, dt_init_floor = 1e-4;
      auto& dt_bias = gdn->dt_bias();
      dt_bias.uniform_(0, 1, generator);
      auto dt = (dt_bias * (std::log(dt_max) - std::log(dt_min)) + std::log(dt_min)).exp().clamp_min(dt_init_floor);
      dt_bias.copy_(dt + at::log(-at::expm1(-dt)));
      double out_std = std;
      if (method == "llama" || method == "normalized") out_std = std / std::sqrt(2 * n_blocks);
      else if (method == "llama_depth") out_std = std / std::sqrt(2 * depth);
      init_linear(gdn->w_out(), out_std, generator);
    } else {
      auto& att = block.attention();
      for (Linear* w : {&att.w_q(), &att.w_k(), &att.w_v()}) {
        init_linear(*w, method == "fan_in" ? std::pow(w->in_features(), -0.5) : std, generator);
      }
      if (Linear* w_g = att.w_g())
        init_linear(*w_g, method == "fan_in" ? std::pow(w_g->in_features(), -0.5) : std, generator);
      double out_std = std;
      if (method == "fan_in") out_std = std::pow(att.w_out().in_features(), -0.5);
      else if (method == "llama" || method == "normalized") out_std = std / std::sqrt(2 * n_blocks);
      else if (method == "llama_depth") out_std = std / std::sqrt(2 * depth);
      init_linear(att.w_out(), out_std, generator);
    }

    double w3_std = std;
    if (method == "llama") w3_std = std / std::sqrt(2 * n_blocks);
    else if (method == "llama_depth") w3_std = std / std::sqrt(2 * depth);
    if (FeedForward* ffp = block.feed_forward()) {
      auto& ff = *ffp;
      init_linear(ff.w1(), method == "fan_in" ? std::pow(ff.w1().in_features(), -0.5) : std, generator);
      if (Linear* w3 = ff.w3())
        init_linear(*w3, method == "fan_in" ? std::pow(w3->in_features(), -0.5) : w3_std, generator);
      // OLMo-core reuses the w3 std for w2 (except fan_in, which uses w2's own fan-in); the
      // classic feed-forward, which has no w3, scales its output layer the same way.
      const double w2_std = method == "normalized" ? std / std::sqrt(2 * n_blocks) : w3_std;
      init_linear(ff.w2(), method == "fan_in" ? std::pow(ff.w2().in_features(), -0.5) : w2_std,
                  generator);
    }
    if (MoE* moe = block.feed_forward_moe()) {
      // InitMethod.init_feed_forward_moe: router weight, then w1, w2, w3 over their flat
      // OLMo-core shapes, all with the (depth-scaled) std; fan_in uses each matrix's fan-in.
      const double moe_std = w3_std;
      const double d_model = static_cast<double>(spec.d_model);
      const double hidden = static_cast<double>(spec.blocks[i].moe->hidden_size);
      const bool fan_in = method == "fan_in";
      trunc_normal_(moe->router().weight(), fan_in ? std::pow(d_model, -0.5) : moe_std, generator);
      auto& mlp = moe->experts().mlp();
      trunc_normal_(mlp.w1(), fan_in ? std::pow(d_model, -0.5) : moe_std, generator);
      trunc_normal_(mlp.w2(), fan_in ? std::pow(hidden, -0.5) : moe_std, generator);
      trunc_normal_(mlp.w3(), fan_in ? std::pow(d_model, -0.5) : moe_std, generator);
      if (FeedForward* shared = moe->shared_mlp()) {
        // OLMo-core never re-initializes the shared MLP: it keeps nn.Linear's default
        // kaiming_uniform_(a=sqrt(5)) weights and U(+-1/sqrt(fan_in)) biases from the global
        // RNG. We draw the same distributions from a generator of their own (seeded from
        // init_seed and the block), so the weights above still match OLMo-core's draws.
        at::Generator g = at::detail::createCPUGenerator(static_cast<uint64_t>(spec.init_seed) * 1000003u + i + 1);
        for (Linear* l : {&shared->w1(), shared->w3(), &shared->w2()}) {
          if (!l) continue;
          const double bound = 1.0 / std::sqrt(static_cast<double>(l->in_features()));
          l->weight().uniform_(-bound, bound, g);
          if (l->bias()) l->bias()->uniform_(-bound, bound, g);
        }
      }
    }
  }

  double final_std = spec.init_std;
  if (method != "normal") final_std = std::pow(static_cast<double>(spec.d_model), -0.5);
  // Tied: the LM head is the embedding table, already drawn (OLMo-core skips it too).
  if (!model.lm_head().tied()) init_linear(model.lm_head().w_out(), final_std, generator);
  if (spec.normalized) model.normalize_matrices();
}

}  // namespace olm::nn
