// olmo_core.nn.attention.Attention: MHA/GQA/MQA with optional QK-norm (over the whole
// projection or per head), clip_qkv and RoPE, over ATen's SDPA (backend "torch") or an
// explicit softmax (backend "explicit", OLM's MultiHeadAttention; it also soft-caps scores).
// Intra-document masking as OLMo-core's forward(cu_doc_lens=...): no attention across
// documents of a packed row, and RoPE positions restart at 0 in every document.
#pragma once
#include "core/nn/kv_cache.h"
#include "core/nn/layer_norm.h"
#include "core/nn/parallel.h"
#include "core/nn/rope.h"

namespace olm::nn {

// OLMo-core's cu_doc_lens (int32/int64, 1-D, over the flattened (batch, seq_len) tokens,
// starting at 0 and ending at batch * seq_len; every row starts a document) turned into each
// token's position inside its document, (batch, seq_len) int64 on cu_doc_lens' device.
// max_doc_len > 0 must bound the longest document. Throws olm::Error(kInvalidArgument)
// naming `argument` when cu_doc_lens breaks a rule.
at::Tensor document_positions(const at::Tensor& cu_doc_lens, int64_t batch, int64_t seq_len,
                              int64_t max_doc_len = 0, const std::string& argument = "cu_doc_lens");

// ALiBi's head slopes (Press et al., their reference get_slopes): for a power of two n,
// 2^(-8 (h + 1) / n); otherwise those of the largest power of two p below n, then every other
// slope of 2p for the remaining n - p heads.
std::vector<double> alibi_slopes(int64_t n_heads);

class Attention : public Module {
 public:
  Attention(int64_t d_model, const AttentionSpec& spec, std::shared_ptr<BufferCache> cache,
            const at::TensorOptions& options);

  // x: (B, T, d_model) -> (B, T, d_model). With a cache, x holds the T positions after the
  // cache's `length` ones; their keys and values are appended to the cache. doc_positions,
  // when defined, is (B, T) int64: each token's position inside its document
  // (document_positions()); it excludes a cache.
  at::Tensor forward(const at::Tensor& x_in, KVCache* cache = nullptr,
                     const at::Tensor& doc_positions = at::Tensor()) const;

  int64_t n_kv_heads() const { return spec_.n_kv_heads; }
  int64_t head_dim() const { return spec_.head_dim; }

  Linear& w_q() { return *w_q_; }
  Linear& w_k() { return *w_k_; }
  Linear& w_v() { return *w_v_; }
  Linear& w_out() { return *w_out_; }
  Linear* w_g() { return w_g_.get(); }

  // nGPT: unit rows for w_q, w_k, w_v, unit columns for w_out.
  void normalize_matrices();

  // Context parallelism: forward then takes this rank's tokens (doc_positions required, no
  // cache) and attends over the whole sequence through `cp`. Throws kInvalidConfig naming the
  // attention field that cannot be split over the sequence (the explicit backend's soft-cap,
  // ALiBi, dropout); NULL reverts.
  void set_context_parallel(std::shared_ptr<ContextParallel> cp);
  void check_context_parallel() const;  // set_context_parallel's refusals, changing nothing

  // Tensor parallelism (OLMo-core's apply_tp for attention): the parameters split over
  // `degree` ranks, named below this module: w_q (and its bias) by heads; w_k and w_v by heads
  // when n_kv_heads splits over the degree (else replicated: each rank computes every KV head
  // and uses those its query heads need); the gates by heads; the QK-norm weights with their
  // projections when the norm spans the whole projection (per-head ones are replicated); w_out
  // by its input columns (row-parallel; its bias is replicated). Throws kInvalidConfig naming
  // the attention field that does not split ("attention.n_heads: ...").
  std::vector<TensorParallelSplit> tensor_parallel_splits(int64_t degree) const;
  // Switches forward to TP once the split parameters hold this rank's slices: forward then
  // takes this rank's sequence shard (B, T/size, d_model), gathers the whole sequence, runs
  // this rank's heads and returns its shard of w_out's output summed over the group.
  void set_tensor_parallel(std::shared_ptr<TensorParallel> tp);

 private:
  std::shared_ptr<TensorParallel> tp_;
  bool kv_heads_split(int64_t degree) const { return spec_.n_kv_heads % degree == 0; }
  // Under TP: this rank's query heads' key/value heads among those it computes (B, S, H_local, D).
  at::Tensor kv_index_;
  std::shared_ptr<ContextParallel> cp_;
  // The gates (on the block input x) and w_out on att (B, T, H, D).
  at::Tensor finish(const at::Tensor& x, at::Tensor att) const;
  AttentionSpec spec_;
  std::shared_ptr<Linear> w_q_, w_k_, w_v_, w_out_, w_g_;
  std::shared_ptr<LayerNorm> q_norm_, k_norm_;
  at::Tensor* sq_ = nullptr;  // normalized (nGPT) attention's learned query and key scales
  at::Tensor* sk_ = nullptr;
  double d_model_ = 0;
  std::optional<RotaryEmbedding> rope_;
  std::vector<double> alibi_slopes_;  // empty without ALiBi
};

}  // namespace olm::nn
