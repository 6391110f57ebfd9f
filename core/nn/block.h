// olmo_core.nn.transformer.block: TransformerBlock ("default", pre-norm),
// ReorderedNormTransformerBlock ("reordered_norm", OLMo-2: norms on the sublayer outputs),
// LayerNormScaledTransformerBlock ("default_scaled": pre-norm outputs times 1/sqrt(layer)) and
// PeriNormTransformerBlock ("peri_norm": norms on the sublayers' inputs and outputs),
// NormalizedTransformerBlock ("normalized", nGPT: hidden states stay on the unit sphere), and the
// MoE blocks: MoETransformerBlock ("moe"), MoEReorderedNormTransformerBlock ("moe_reordered_norm"),
// MoEHybridTransformerBlock ("moe_hybrid") and MoEHybridReorderedNormTransformerBlock
// ("moe_hybrid_reordered_norm": a dense block plus a sparse MoE branch on the block input).
#pragma once
#include "core/nn/attention.h"
#include "core/nn/feed_forward.h"
#include "core/nn/gated_delta_net.h"
#include "core/nn/moe.h"

namespace olm::nn {

class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, int64_t block_idx, const BlockSpec& spec,
                   std::shared_ptr<BufferCache> cache, const at::TensorOptions& options);
  // doc_positions: see Attention::forward. aux: where MoE blocks add their routers'
  // auxiliary losses (NULL: not computed).
  at::Tensor forward(const at::Tensor& x, KVCache* cache = nullptr, const at::Tensor& doc_positions = at::Tensor(),
                     MoEAuxLosses* aux = nullptr) const;

  // The sequence mixer in the "attention" slot: an Attention, or (BlockSpec::gated_delta_net)
  // a GatedDeltaNet; attention() requires the former.
  Attention& attention();
  GatedDeltaNet* gated_delta_net() { return gated_delta_net_.get(); }
  FeedForward* feed_forward() { return feed_forward_.get(); }  // NULL for moe, moe_reordered_norm
  MoE* feed_forward_moe() { return moe_.get(); }               // NULL for dense blocks

  // nGPT: the attention's and the feed-forward's matrices back to unit rows/columns.
  void normalize_matrices();

 private:
  // OLMo-core's ResidualStream: residual + alpha * dropout(x).
  at::Tensor residual(const at::Tensor& residual, const at::Tensor& x, double alpha) const;

  BlockSpec spec_;
  std::shared_ptr<Attention> attention_;
  std::shared_ptr<GatedDeltaNet> gated_delta_net_;
  // The sequence mixer's output (Attention with its cache, or the GatedDeltaNet).
  at::Tensor mix(const at::Tensor& x, KVCache* cache, const at::Tensor& doc_positions) const;
  std::shared_ptr<LayerNorm> attention_norm_;
  std::shared_ptr<FeedForward> feed_forward_;
  std::shared_ptr<LayerNorm> feed_forward_norm_;
  std::shared_ptr<LayerNorm> post_attention_norm_, post_feed_forward_norm_;  // peri_norm
  at::Tensor* ln_scale_ = nullptr;  // default_scaled: OLMo-core's float32 "ln_scale" buffer
  at::Tensor* attn_alpha_ = nullptr;  // normalized: the learned step sizes toward each sublayer
  at::Tensor* mlp_alpha_ = nullptr;
  double d_model_ = 0;
  std::shared_ptr<MoE> moe_;
  std::shared_ptr<LayerNorm> feed_forward_moe_norm_;  // hybrid blocks
};

}  // namespace olm::nn
