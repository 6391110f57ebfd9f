// olmo_core.nn.transformer.Transformer: embeddings -> blocks -> LM head.
#pragma once
#include "core/nn/block.h"
#include <functional>

#include "core/nn/lm_head.h"

namespace olm::nn {

class Transformer : public Module {
 public:
  // Builds on the CPU in float32; call init_weights() and then to() to place it.
  explicit Transformer(const ModelSpec& spec);

  // Moves every parameter to `device` and `dtype` and marks it trainable.
  void to(const at::Device& device, at::ScalarType dtype);

  // (B, T, d_model). With caches (one per block), input_ids continue the cached positions.
  // doc_positions (B, T) int64, from document_positions(), masks attention to each token's
  // own document and restarts RoPE positions there (excludes caches). aux: where MoE blocks
  // add their routers' auxiliary losses (NULL: not computed).
  at::Tensor hidden_states(const at::Tensor& input_ids, std::vector<KVCache>* caches = nullptr,
                           const at::Tensor& doc_positions = at::Tensor(), MoEAuxLosses* aux = nullptr) const;
  at::Tensor forward(const at::Tensor& input_ids, int64_t logits_to_keep = 0,
                     std::vector<KVCache>* caches = nullptr,
                     const at::Tensor& doc_positions = at::Tensor()) const;
  // Empty caches for `batch` sequences of up to max_len positions, one per block: keys and
  // values for attention blocks, a recurrent state for GatedDeltaNet blocks (its size does
  // not depend on max_len).
  std::vector<KVCache> make_kv_caches(int64_t batch, int64_t max_len) const;
  // For MoE models also the routers' auxiliary losses, divided by options.loss_div_tensor,
  // or by options.loss_div_factor when it is not 1, or else by the micro-batch's tokens.
  LossOutput loss(const at::Tensor& input_ids, const at::Tensor& labels,
                  const LossOptions& options, const at::Tensor& doc_positions = at::Tensor()) const;
  // MoETransformer.post_batch: after the last backward of a batch, before the optimizer step
  // (moves the aux-loss-free routers' score biases).
  // sum_across_ranks (may be empty): sums a tensor over the data-parallel ranks in place.
  void post_batch(const std::function<void(at::Tensor&)>& sum_across_ranks = {});

  // Runs block i through `runner` instead of directly when checkpointed[i] is set and grad
  // mode is on (activation checkpointing lives in core/train; nn does not depend on it).
  using BlockRunner = std::function<at::Tensor(TransformerBlock&, const at::Tensor& x, const at::Tensor& doc_positions,
                                               MoEAuxLosses* aux)>;
  void set_block_runner(BlockRunner runner, std::vector<bool> checkpointed) {
    block_runner_ = std::move(runner);
    checkpointed_ = std::move(checkpointed);
  }

  // OLMo-core's apply_cp: every attention then attends over the whole sequence through `cp`
  // while the rest of the model runs on this rank's tokens; hidden_states and loss take
  // doc_positions (each token's position in its document, its global position without
  // documents). Throws kInvalidConfig naming what cannot be split over the sequence
  // (GatedDeltaNet and MoE blocks, see Attention::set_context_parallel). NULL reverts.
  void apply_context_parallel(const std::shared_ptr<ContextParallel>& cp);
  // apply_context_parallel's refusals, changing nothing.
  void check_context_parallel() const;
  const std::shared_ptr<ContextParallel>& context_parallel() const { return cp_; }

  // OLMo-core's apply_tp, with sequence and loss parallelism. Called once, after the full
  // weights are in place, identical on every rank of `tp`: each split parameter's tensor is
  // replaced by this rank's slice (a fresh contiguous tensor, same name, same requires_grad;
  // the layout: tensor_parallel_slices) and the forward switches to TP. Then every rank passes
  // the same whole batch: input_ids (B, T) with T % tp->size() == 0, labels and doc_positions
  // (B, T) for the whole sequence. hidden_states returns this rank's contiguous sequence shard
  // (B, T / size, d_model); forward the whole vocabulary's logits for the whole sequence;
  // loss the same full loss on every rank, the logits never gathered (ce and z losses alike).
  // Gradients: a split parameter's is the gradient of its slice; a replicated one's is this
  // rank's PARTIAL sum, which the caller sums over the TP group. No KV caches under TP.
  // Throws kInvalidConfig naming the field that cannot be split ("vocab_size",
  // "blocks[0].attention.n_heads: 6 heads do not split over tensor_parallel.degree 4", MoE and
  // GatedDeltaNet blocks, the normalized model, lm_head.loss_implementation fused_linear)
  // before changing anything; kInvalidArgument for a NULL tp or a second call.
  void apply_tensor_parallel(const std::shared_ptr<TensorParallel>& tp);
  // apply_tensor_parallel's refusals for a group of `degree` ranks, changing nothing.
  void check_tensor_parallel(int64_t degree) const;
  const std::shared_ptr<TensorParallel>& tensor_parallel() const { return tp_; }
  // Every parameter's layout on TP rank `rank` (0 <= rank < the TP size, 1 without TP), in
  // named_parameters() order.
  std::vector<TensorParallelSlice> tensor_parallel_slices(int64_t rank) const;

  // nGPT (spec().normalized): embeddings and every weight matrix back to unit norm, as
  // OLMo-core's NormalizedTransformer.normalize_matrices; called after each optimizer step.
  void normalize_matrices();

  const ModelSpec& spec() const { return spec_; }
  at::Tensor& embeddings() { return embeddings_; }
  at::Tensor* position_embeddings() { return position_embeddings_; }  // learned only
  std::vector<std::shared_ptr<TransformerBlock>>& blocks() { return blocks_; }
  LMHead& lm_head() { return *lm_head_; }

 private:
  ModelSpec spec_;
  at::Tensor& embeddings_;
  at::Tensor* position_embeddings_ = nullptr;
  std::shared_ptr<LayerNorm> embedding_norm_;
  std::vector<std::shared_ptr<TransformerBlock>> blocks_;
  std::shared_ptr<LMHead> lm_head_;
  BlockRunner block_runner_;
  std::vector<bool> checkpointed_;
  std::shared_ptr<ContextParallel> cp_;
  std::shared_ptr<TensorParallel> tp_;
  std::vector<TensorParallelSlice> tp_layout_;  // rank 0's; empty without TP
  // Under TP: this rank's partial sum of the embeddings of input_ids (rows outside its slice
  // of the vocabulary give zeros), reduce-scattered into its sequence shard.
  at::Tensor embed_tensor_parallel(const at::Tensor& input_ids) const;
  // Every parameter's layout over `degree` ranks (start 0), after every refusal.
  std::vector<TensorParallelSlice> tensor_parallel_layout(int64_t degree) const;
};

// The embedding table is a module of its own in OLMo-core ("embeddings.weight").
class Embedding : public Module {
 public:
  Embedding(int64_t vocab_size, int64_t d_model, const at::TensorOptions& options)
      : weight_(register_parameter("weight", at::zeros({vocab_size, d_model}, options))) {}
  at::Tensor& weight() { return weight_; }

 private:
  at::Tensor& weight_;
};

// Vaswani et al.'s sinusoidal position encodings for integer positions (any shape), in
// float32: [..., 2i] = sin(p / 10000^(2i/d)), [..., 2i+1] = cos(p / 10000^(2i/d)).
at::Tensor sinusoidal_positions(const at::Tensor& positions, int64_t d_model);

// olmo_core.nn.transformer.init: the configured init method, drawing from a CPU generator
// seeded with spec.init_seed in OLMo-core's order (embeddings; per block w_q, w_k, w_v, w_out,
// w1, w3, w2; the LM head's w_out), so CPU weights equal OLMo-core's for the same seed.
void init_weights(Transformer& model);

// nn.init.trunc_normal_(t, mean=0, std, a=-3 std, b=3 std, generator) step for step.
void trunc_normal_(at::Tensor& t, double std, at::Generator& generator);

}  // namespace olm::nn
