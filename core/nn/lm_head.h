// olmo_core.nn.lm_head.LMHead: optional final norm, w_out, and the loss: cross-entropy on
// float32 logits plus the optional z-loss, with OLMo-core's reductions and loss_div_factor.
#pragma once
#include "core/nn/layer_norm.h"

namespace olm::nn {

enum class LossReduction { kMean, kSum, kNone };

struct LossOptions {
  int64_t ignore_index = -100;
  LossReduction reduction = LossReduction::kMean;
  std::optional<double> z_loss_multiplier;  // nullopt: no z-loss
  double loss_div_factor = 1.0;
  at::Tensor loss_div_tensor;  // when defined, used instead of loss_div_factor
  bool return_logits = false;
  int64_t logits_to_keep = 0;  // 0: all positions
};

struct LossOutput {
  at::Tensor loss;     // ce_loss + z_loss, reduced and divided
  at::Tensor ce_loss;  // detached
  std::optional<at::Tensor> z_loss;  // detached
  std::optional<at::Tensor> logits;
  // MoE models: the routers' weighted load-balancing and z-losses summed over the blocks
  // (scalars, NOT detached and NOT part of `loss`: as OLMo-core attaches them to the graph
  // apart from the LM loss, a trainer adds them to what it differentiates). nullopt: none.
  std::optional<at::Tensor> lb_loss;
  std::optional<at::Tensor> router_z_loss;
};

// olmo_core.nn.functional.cross_entropy_loss on (N, V) logits and (N,) labels.
std::pair<at::Tensor, std::optional<at::Tensor>> cross_entropy_loss(
    const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
    LossReduction reduction, std::optional<double> z_loss_multiplier);

// lse: (N) logsumexp of the logits; mask: (N) true where the label is not ignored.
at::Tensor z_loss_from_logsumexp(const at::Tensor& lse, const at::Tensor& mask, LossReduction reduction,
                                 double multiplier);

// Megatron's vocabulary-parallel cross-entropy: logits (N, V/size) hold this rank's slice of
// the vocabulary, [vocab_start, vocab_start + V/size); labels (N) the whole vocabulary's ids.
// The max, the sum of exponentials and the target's logit are combined across the group (the
// full logits are never gathered), so every rank returns the same (per-token loss (N), 0 where
// the label is ignore_index; logsumexp (N)). Backward gives this rank's slice of the gradient
// for the loss every rank holds alike.
std::pair<at::Tensor, at::Tensor> vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                               int64_t vocab_start, int64_t ignore_index,
                                                               TensorParallel& tp);

class LMHead : public Module {
 public:
  // tied_weight (tie_word_embeddings): w_out uses this (vocab_size, d_model) tensor, owned
  // by the transformer, instead of a parameter of its own; the spec must have no bias.
  LMHead(int64_t d_model, int64_t vocab_size, const LMHeadSpec& spec,
         const at::TensorOptions& options, const at::Tensor* tied_weight = nullptr);

  // h: (B, T, d_model) -> logits (B, T', V) over the last logits_to_keep positions.
  at::Tensor logits(const at::Tensor& h, int64_t logits_to_keep) const;
  LossOutput loss(const at::Tensor& h, const at::Tensor& labels, const LossOptions& options) const;

  Linear& w_out() { return *w_out_; }  // not with a tied weight
  bool tied() const { return tied_weight_ != nullptr; }

  // nGPT: unit rows for w_out.
  void normalize_matrices();

  // Tensor parallelism: w_out (and its bias) split by the vocabulary (a tied head uses the
  // embeddings' slice of rows), named below this module. Throws kInvalidConfig naming the
  // lm_head field that cannot be split (the normalized head, the fused_linear loss).
  std::vector<TensorParallelSplit> tensor_parallel_splits(int64_t degree) const;
  // Once the weights hold this rank's slice: logits() and loss() then take this rank's
  // sequence shard of h; logits() returns the whole vocabulary's logits (gathered), loss() the
  // vocabulary-parallel loss, the same on every rank, without gathering them.
  void set_tensor_parallel(std::shared_ptr<TensorParallel> tp) { tp_ = std::move(tp); }

 private:
  std::shared_ptr<TensorParallel> tp_;
  // Under TP: the final norm on the shard, then the whole sequence for the projection.
  at::Tensor normed_input(const at::Tensor& h, int64_t logits_to_keep) const;
  at::Tensor keep_last(const at::Tensor& t, int64_t logits_to_keep) const;
  const at::Tensor& weight() const;  // w_out's, or the tied embedding table
  at::Tensor bias() const;           // undefined when there is none
  at::Tensor logit_scale() const;  // the normalized head's per-entry scale (V); undefined for others
  at::Tensor project(const at::Tensor& x) const;  // (x w^T (+ b)) times logit_scale()

  int64_t vocab_size_;
  bool fused_linear_loss_;
  std::shared_ptr<LayerNorm> norm_;
  std::shared_ptr<Linear> w_out_;
  at::Tensor* sz_ = nullptr;  // normalized head: learned per-token logit scales
  double d_model_ = 0;
  const at::Tensor* tied_weight_ = nullptr;
};

}  // namespace olm::nn
