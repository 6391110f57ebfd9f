// olmo_core.nn.attention.recurrent.GatedDeltaNet (Yang et al. 2024, "Gated Delta Networks"):
// a linear-attention sequence mixer with a (n_v_heads, head_dim, head_v_dim) recurrent state
// updated by the gated delta rule
//   S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - (exp(g_t) S_{t-1})^T k_t))^T,   o_t = S_t^T q_t,
// after short causal depthwise convolutions (with SiLU) on q, k and v, with q and k
// L2-normalized and q scaled by head_dim^-1/2 (fla's chunk_gated_delta_rule with
// use_qk_l2norm_in_kernel), beta = sigmoid(w_b x) (times 2 with allow_neg_eigval),
// g = -exp(A_log) softplus(w_a x + dt_bias), GVA (q and k heads repeated to n_v_heads), and an
// RMS norm gated by silu(w_g x) before w_out. OLMo-core runs fla's Triton kernels; we run the
// recurrence over ATen ops (float32, or float64 for float64 inputs), in chunked (WY) form,
// which any device can run and autograd differentiates; the token-by-token form is kept as
// the reference it is tested against.
// Intra-document masking as OLMo-core's forward(cu_doc_lens=...): the state restarts at every
// document start and the convolutions do not reach into the previous document.
// Generation carries the recurrent state and the convolutions' last inputs in a KVCache (as
// fla's past_key_values: recurrent_state and conv_state), so each new token costs one state
// update however long the sequence.
#pragma once
#include "core/config/config.h"
#include "core/nn/kv_cache.h"
#include "core/nn/module.h"

namespace olm::nn {

// olmo_core.nn.convolution.CausalConv1d: a depthwise nn.Conv1d, weight (C, 1, conv_size),
// left-padded by conv_size - 1, followed by SiLU.
class CausalConv1d : public Module {
 public:
  CausalConv1d(int64_t channels, int64_t kernel_size, bool bias, const at::TensorOptions& options);
  // x (B, T, C); doc_positions (B, T) or undefined: taps never reach before a document start.
  // tail, when not NULL, holds the (B, kernel_size - 1, C) inputs just before x (zeros at a
  // sequence start) and is replaced by the last kernel_size - 1 inputs up to x's end, so a
  // sequence fed in pieces gives the outputs of one call; it excludes doc_positions.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& doc_positions = at::Tensor(),
                     at::Tensor* tail = nullptr) const;
  at::Tensor& weight() { return weight_; }
  at::Tensor* bias() { return bias_; }

 private:
  at::Tensor& weight_;
  at::Tensor* bias_;
};

// fla.modules.FusedRMSNormGated (activation "swish"): rms_norm(x) * weight * silu(g) over the
// last dimension, in float32.
class RMSNormGated : public Module {
 public:
  RMSNormGated(int64_t size, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& g) const;
  at::Tensor& weight() { return weight_; }

 private:
  double eps_;
  at::Tensor& weight_;
};

class GatedDeltaNet : public Module {
 public:
  GatedDeltaNet(int64_t d_model, const GatedDeltaNetSpec& spec, const at::TensorOptions& options);

  // x: (B, T, d_model) -> (B, T, d_model). doc_positions: as Attention::forward. With a
  // cache (from make_cache), x holds the T positions after the cache's `length` ones, which
  // start from the cached state and convolution inputs and leave theirs in the cache: a
  // prompt goes through the chunked form in one call, single tokens through the recurrence.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& doc_positions = at::Tensor(),
                     KVCache* cache = nullptr) const;
  // An empty cache for `batch` sequences: a zero state and zero convolution inputs, the
  // convolutions' inputs in `dtype` (the model's).
  KVCache make_cache(int64_t batch, at::ScalarType dtype, const at::Device& device) const;

  const GatedDeltaNetSpec& spec() const { return spec_; }
  Linear& w_q() { return *w_q_; }
  Linear& w_k() { return *w_k_; }
  Linear& w_v() { return *w_v_; }
  Linear& w_a() { return *w_a_; }
  Linear& w_b() { return *w_b_; }
  Linear& w_g() { return *w_g_; }
  Linear& w_out() { return *w_out_; }
  at::Tensor& A_log() { return *A_log_; }
  at::Tensor& dt_bias() { return *dt_bias_; }
  CausalConv1d& q_conv1d() { return *q_conv1d_; }
  CausalConv1d& k_conv1d() { return *k_conv1d_; }
  CausalConv1d& v_conv1d() { return *v_conv1d_; }
  RMSNormGated& o_norm() { return *o_norm_; }

 private:
  GatedDeltaNetSpec spec_;
  at::Tensor* A_log_ = nullptr;
  at::Tensor* dt_bias_ = nullptr;
  std::shared_ptr<Linear> w_q_, w_k_, w_v_, w_a_, w_b_, w_g_, w_out_;
  std::shared_ptr<CausalConv1d> q_conv1d_, k_conv1d_, v_conv1d_;
  std::shared_ptr<RMSNormGated> o_norm_;
};

// The gated delta rule itself, token by token: q, k (B, T, H, K), v (B, T, H, V), g and beta
// (B, T, H); q and k already normalized and scaled; reset (B, T) bool or undefined: the state
// is zeroed before those tokens. Returns o (B, T, H, V) in the inputs' dtype.
// state, when not NULL, is the (B, H, K, V) state before the first token (undefined: zeros,
// as without it) and is replaced by the state after the last token, in float32 (float64 for
// float64 inputs): fla's initial_state and output_final_state.
at::Tensor gated_delta_rule_recurrent(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta,
                                      const at::Tensor& reset = at::Tensor(), at::Tensor* state = nullptr);

// The same in chunked form (the WY representation, as fla's chunk_gated_delta_rule): per
// chunk of chunk_size tokens, two triangular solves and a few matmuls; the forward uses it.
// state: as gated_delta_rule_recurrent's.
at::Tensor gated_delta_rule_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& g, const at::Tensor& beta,
                                    const at::Tensor& reset = at::Tensor(), int64_t chunk_size = 64,
                                    at::Tensor* state = nullptr);

}  // namespace olm::nn
