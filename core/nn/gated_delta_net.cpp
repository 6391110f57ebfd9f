#include "core/nn/gated_delta_net.h"

#include <ATen/ops/linalg_solve_triangular.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>

#include "core/error.h"

namespace olm::nn {

CausalConv1d::CausalConv1d(int64_t channels, int64_t kernel_size, bool bias, const at::TensorOptions& options)
    : weight_(register_parameter("weight", at::zeros({channels, 1, kernel_size}, options))),
      bias_(bias ? &register_parameter("bias", at::zeros({channels}, options)) : nullptr) {}

at::Tensor CausalConv1d::forward(const at::Tensor& x, const at::Tensor& doc_positions, at::Tensor* tail) const {
  if (tail) {
    require(!doc_positions.defined(), ErrorCode::kInvalidArgument,
            "document masking cannot be combined with a KV cache");
    // The cached inputs take the place of the zero padding: every output of x sees the same
    // taps, and sums the same terms in the same order, as in one call over the whole sequence.
    const int64_t keep = weight_.size(2) - 1, T = x.size(1);
    const auto joined = at::cat({tail->to(x.scalar_type()), x}, 1);
    *tail = joined.narrow(1, T, keep).clone();  // a copy: the cache must not pin the whole prompt
    return forward(joined).narrow(1, keep, T);
  }
  // y[t] = sum_j w[:, j] x[t - (K - 1 - j)]: tap j looks back `lag` = K - 1 - j tokens, and
  // drops out where that is before the row (zero padding) or before the document's start.
  const int64_t K = weight_.size(2), T = x.size(1);
  const auto w = weight_.squeeze(1).to(x.scalar_type());  // (C, K)
  at::Tensor y = bias_ ? bias_->to(x.scalar_type()).expand_as(x).clone() : at::zeros_like(x);
  for (int64_t j = 0; j < K; ++j) {
    const int64_t lag = K - 1 - j;
    if (lag >= T) continue;
    at::Tensor shifted = lag == 0 ? x : at::constant_pad_nd(x.narrow(1, 0, T - lag), {0, 0, lag, 0});
    if (doc_positions.defined() && lag > 0)
      shifted = shifted * doc_positions.ge(lag).unsqueeze(-1).to(x.scalar_type());
    y = y + shifted * w.select(1, j);
  }
  return at::silu(y);
}

RMSNormGated::RMSNormGated(int64_t size, double eps, const at::TensorOptions& options)
    : eps_(eps), weight_(register_parameter("weight", at::ones({size}, options))) {}

at::Tensor RMSNormGated::forward(const at::Tensor& x, const at::Tensor& g) const {
  const auto dtype = x.scalar_type();
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const auto xf = x.to(compute);
  const auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (normed * weight_.to(compute) * at::silu(g.to(compute))).to(dtype);
}

GatedDeltaNet::GatedDeltaNet(int64_t d_model, const GatedDeltaNetSpec& spec, const at::TensorOptions& options)
    : spec_(spec) {
  const int64_t key_dim = spec.key_dim(), value_dim = spec.value_dim(), h = spec.n_v_heads;
  // OLMo-core's registration order.
  w_q_ = register_module("w_q", std::make_shared<Linear>(d_model, key_dim, false, options));
  w_k_ = register_module("w_k", std::make_shared<Linear>(d_model, key_dim, false, options));
  w_v_ = register_module("w_v", std::make_shared<Linear>(d_model, value_dim, false, options));
  w_a_ = register_module("w_a", std::make_shared<Linear>(d_model, h, false, options));
  w_b_ = register_module("w_b", std::make_shared<Linear>(d_model, h, false, options));
  A_log_ = &register_parameter("A_log", at::zeros({h}, options));
  dt_bias_ = &register_parameter("dt_bias", at::zeros({h}, options));
  q_conv1d_ = register_module("q_conv1d", std::make_shared<CausalConv1d>(key_dim, spec.conv_size, spec.conv_bias, options));
  k_conv1d_ = register_module("k_conv1d", std::make_shared<CausalConv1d>(key_dim, spec.conv_size, spec.conv_bias, options));
  v_conv1d_ = register_module("v_conv1d", std::make_shared<CausalConv1d>(value_dim, spec.conv_size, spec.conv_bias, options));
  w_g_ = register_module("w_g", std::make_shared<Linear>(d_model, value_dim, false, options));
  // fla's FusedRMSNormGated is created without a dtype: its weight is float32 whatever the model's.
  o_norm_ = register_module("o_norm", std::make_shared<RMSNormGated>(spec.head_v_dim, spec.norm_eps,
                                                                      options.dtype(at::kFloat)));
  w_out_ = register_module("w_out", std::make_shared<Linear>(value_dim, d_model, false, options));
}

at::Tensor gated_delta_rule_recurrent(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, const at::Tensor& reset,
                                      at::Tensor* state) {
  // The state's products stay in float32 under bf16 autocast (fla's kernels accumulate in float32).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto dtype = v.scalar_type();
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  // (B, H, T, ...) in the compute dtype.
  const auto qf = q.to(compute).transpose(1, 2), kf = k.to(compute).transpose(1, 2);
  const auto vf = v.to(compute).transpose(1, 2);
  auto decay = g.to(compute).exp().transpose(1, 2);  // (B, H, T)
  if (reset.defined()) decay = decay * reset.logical_not().to(compute).unsqueeze(1);
  const auto bf = beta.to(compute).transpose(1, 2);
  at::Tensor S = state && state->defined() ? state->to(compute) : at::zeros({B, H, K, V}, qf.options());
  std::vector<at::Tensor> outs;
  outs.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    const auto k_t = kf.select(2, t).unsqueeze(-2);  // (B, H, 1, K)
    S = S * decay.select(2, t).unsqueeze(-1).unsqueeze(-1);
    const auto u = (vf.select(2, t).unsqueeze(-2) - at::matmul(k_t, S)) * bf.select(2, t).unsqueeze(-1).unsqueeze(-1);
    S = S + at::matmul(k_t.transpose(-1, -2), u);  // + k u^T
    outs.push_back(at::matmul(qf.select(2, t).unsqueeze(-2), S));  // (B, H, 1, V)
  }
  if (state) *state = S;
  return at::cat(outs, 2).transpose(1, 2).to(dtype);  // (B, T, H, V)
}

at::Tensor gated_delta_rule_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& g, const at::Tensor& beta, const at::Tensor& reset,
                                    int64_t chunk_size, at::Tensor* state) {
  // The state's products stay in float32 under bf16 autocast (fla's kernels accumulate in float32).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  // Within a chunk, with gc the cumulative log-decay from the chunk's start, D_ij = exp(gc_i -
  // gc_j) (i >= j) and S0 the state entering the chunk, the recurrence unrolls to
  //   (I + M) U = beta v - (beta exp(gc) k) S0,    M_ij = beta_i D_ij k_i.k_j  (j < i),
  //   o_i = exp(gc_i) S0^T q_i + sum_{j<=i} D_ij (q_i.k_j) u_j,
  //   S_C = exp(gc_C) S0 + sum_j D_Cj k_j u_j^T,
  // the WY representation: two unit-lower-triangular solves per chunk, batched over chunks;
  // only the state hand-off runs chunk by chunk. Document starts (reset) cut D and exp(gc)
  // where a start lies between the two tokens.
  const auto dtype = v.scalar_type();
  const auto compute = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  const int64_t C = chunk_size, N = (T + C - 1) / C, pad = N * C - T;
  // (B, T, H, X) -> (B, H, N, C, X), zero-padded at the end (padding has k = v = beta = 0).
  auto chunks = [&](const at::Tensor& t, int64_t X) {
    auto f = t.to(compute);
    if (pad) f = at::constant_pad_nd(f, {0, 0, 0, 0, 0, pad});
    return f.view({B, N, C, H, X}).permute({0, 3, 1, 2, 4});
  };
  const auto qc = chunks(q, K), kc = chunks(k, K), vc = chunks(v, V);
  const auto bc = chunks(beta.unsqueeze(-1), 1), gcum = chunks(g.unsqueeze(-1), 1).squeeze(-1).cumsum(-1);
  const auto opts = qc.options();
  const auto lower = at::ones({C, C}, opts.dtype(at::kBool)).tril();
  auto D = at::exp((gcum.unsqueeze(-1) - gcum.unsqueeze(-2)).masked_fill(lower.logical_not(), -INFINITY));
  auto gam = gcum.exp();                       // (B, H, N, C): decay of S0 up to token i
  auto last = gcum.select(-1, C - 1).exp();    // (B, H, N): decay of S0 over the chunk
  at::Tensor same_last;                        // (B, 1, N, C): token j in the last token's document
  if (reset.defined()) {
    auto r = reset.to(at::kLong);
    if (pad) r = at::constant_pad_nd(r, {0, pad});
    const auto seg = r.cumsum(1).view({B, 1, N, C});
    const auto before = seg.select(-1, 0) - r.view({B, 1, N, C}).select(-1, 0);  // seg entering the chunk
    D = D * seg.unsqueeze(-1).eq(seg.unsqueeze(-2)).to(compute);
    const auto carry = seg.eq(before.unsqueeze(-1)).to(compute);  // no start in (chunk start, i]
    gam = gam * carry;
    last = last * carry.select(-1, C - 1);
    same_last = seg.eq(seg.select(-1, C - 1).unsqueeze(-1)).to(compute);
  }
  const auto kb = kc * bc;
  const auto eye = at::eye(C, opts);
  const auto A = eye + at::matmul(kb, kc.transpose(-1, -2)) * D * at::ones({C, C}, opts).tril(-1);
  const auto Wv = at::linalg_solve_triangular(A, vc * bc, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
  const auto Wk = at::linalg_solve_triangular(A, kb * gam.unsqueeze(-1), false, true, true);
  const auto QK = at::matmul(qc, kc.transpose(-1, -2)) * D;
  const auto qg = qc * gam.unsqueeze(-1);
  auto kdec = kc * at::exp(gcum.select(-1, C - 1).unsqueeze(-1) - gcum).unsqueeze(-1);
  if (same_last.defined()) kdec = kdec * same_last.unsqueeze(-1);
  // A state carried in from earlier tokens enters like a previous chunk's (a document start
  // in the first chunk cuts it through gam and last, as any other).
  at::Tensor S = state && state->defined() ? state->to(compute) : at::zeros({B, H, K, V}, opts);
  std::vector<at::Tensor> outs;
  outs.reserve(N);
  for (int64_t n = 0; n < N; ++n) {
    const auto U = Wv.select(2, n) - at::matmul(Wk.select(2, n), S);  // (B, H, C, V)
    outs.push_back(at::matmul(qg.select(2, n), S) + at::matmul(QK.select(2, n), U));
    S = S * last.select(2, n).unsqueeze(-1).unsqueeze(-1) + at::matmul(kdec.select(2, n).transpose(-1, -2), U);
  }
  // The padding after the last token has g = 0, k = 0: S is the state after token T - 1.
  if (state) *state = S;
  // (B, H, N, C, V) -> (B, T, H, V)
  return at::stack(outs, 2).permute({0, 2, 3, 1, 4}).reshape({B, N * C, H, V}).narrow(1, 0, T).to(dtype);
}

KVCache GatedDeltaNet::make_cache(int64_t batch, at::ScalarType dtype, const at::Device& device) const {
  const auto& s = spec_;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  const int64_t taps = s.conv_size - 1;
  KVCache cache;
  cache.state = at::zeros({batch, s.n_v_heads, s.head_dim, s.head_v_dim},
                          options.dtype(dtype == at::kDouble ? at::kDouble : at::kFloat));
  cache.q_conv = at::zeros({batch, taps, s.key_dim()}, options);
  cache.k_conv = at::zeros({batch, taps, s.key_dim()}, options);
  cache.v_conv = at::zeros({batch, taps, s.value_dim()}, options);
  return cache;
}

at::Tensor GatedDeltaNet::forward(const at::Tensor& x, const at::Tensor& doc_positions, KVCache* cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  const auto& s = spec_;
  require(!(cache && doc_positions.defined()), ErrorCode::kInvalidArgument,
          "document masking cannot be combined with a KV cache");
  if (cache)
    require(cache->state.defined() && cache->state.size(0) == B, ErrorCode::kInvalidArgument,
            "cache: not a GatedDeltaNet cache for a batch of " + std::to_string(B) + " (make it with make_kv_caches)");
  auto beta = at::sigmoid(w_b_->forward(x));
  if (s.allow_neg_eigval) beta = beta * 2.0;
  // g = -exp(A_log) * softplus(w_a x + dt_bias), in float32 (float64 for float64 models).
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto g = -A_log_->to(compute).exp() * at::softplus(w_a_->forward(x).to(compute) + *dt_bias_);

  auto q = q_conv1d_->forward(w_q_->forward(x), doc_positions, cache ? &cache->q_conv : nullptr)
               .view({B, T, s.n_heads, s.head_dim});
  auto k = k_conv1d_->forward(w_k_->forward(x), doc_positions, cache ? &cache->k_conv : nullptr)
               .view({B, T, s.n_heads, s.head_dim});
  auto v = v_conv1d_->forward(w_v_->forward(x), doc_positions, cache ? &cache->v_conv : nullptr)
               .view({B, T, s.n_v_heads, s.head_v_dim});
  if (s.n_v_heads > s.n_heads) {
    q = q.repeat_interleave(s.n_v_heads / s.n_heads, /*dim=*/2);
    k = k.repeat_interleave(s.n_v_heads / s.n_heads, /*dim=*/2);
  }
  // fla's l2norm (x / sqrt(sum x^2 + 1e-6), float32) and the default scale head_dim^-1/2.
  auto l2norm = [&](const at::Tensor& t) {
    const auto f = t.to(compute);
    return f * at::rsqrt(f.pow(2).sum(-1, /*keepdim=*/true) + 1e-6);
  };
  q = l2norm(q) * std::pow(static_cast<double>(s.head_dim), -0.5);
  k = l2norm(k);
  const at::Tensor reset = doc_positions.defined() ? doc_positions.eq(0) : at::Tensor();
  // One new token: a single state update; a padded 64-token chunk would cost far more.
  auto o = cache && T == 1 ? gated_delta_rule_recurrent(q, k, v.to(compute), g, beta, reset, &cache->state)
                           : gated_delta_rule_chunked(q, k, v.to(compute), g, beta, reset, 64,
                                                      cache ? &cache->state : nullptr);  // (B, T, H, V)
  if (cache) cache->length += T;
  const auto gate = w_g_->forward(x).view({B, T, s.n_v_heads, s.head_v_dim});
  o = o_norm_->forward(o, gate).to(x.scalar_type()).reshape({B, T, s.value_dim()});
  return w_out_->forward(o);
}

}  // namespace olm::nn
