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
    auto& att = block.attention();
    // OLMo-core's "normalized" replaces the base std by 1/sqrt(d_model) for the input
    // projections and then derives the output projections' std from that replacement.
    const double std = method == "normalized" ? inv_sqrt_d : spec.init_std;
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

    auto& ff = block.feed_forward();
    init_linear(ff.w1(), method == "fan_in" ? std::pow(ff.w1().in_features(), -0.5) : std, generator);
    double w3_std = std;
    if (method == "llama") w3_std = std / std::sqrt(2 * n_blocks);
    else if (method == "llama_depth") w3_std = std / std::sqrt(2 * depth);
    if (Linear* w3 = ff.w3())
      init_linear(*w3, method == "fan_in" ? std::pow(w3->in_features(), -0.5) : w3_std, generator);
    // OLMo-core reuses the w3 std for w2 (except fan_in, which uses w2's own fan-in); the
    // classic feed-forward, which has no w3, scales its output layer the same way.
    const double w2_std = method == "normalized" ? std / std::sqrt(2 * n_blocks) : w3_std;
    init_linear(ff.w2(), method == "fan_in" ? std::pow(ff.w2().in_features(), -0.5) : w2_std,
                generator);
  }

  double final_std = spec.init_std;
  if (method != "normal") final_std = std::pow(static_cast<double>(spec.d_model), -0.5);
  // Tied: the LM head is the embedding table, already drawn (OLMo-core skips it too).
  if (!model.lm_head().tied()) init_linear(model.lm_head().w_out(), final_std, generator);
  if (spec.normalized) model.normalize_matrices();
}

}  // namespace olm::nn
