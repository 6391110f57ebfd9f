// olmo_core.nn.transformer.block: TransformerBlock ("default", pre-norm) and
// ReorderedNormTransformerBlock ("reordered_norm", OLMo-2: norms on the sublayer outputs).
#pragma once
#include "core/nn/attention.h"
#include "core/nn/feed_forward.h"

namespace olm::nn {

class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t d_model, const BlockSpec& spec, std::shared_ptr<BufferCache> cache,
                   const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, KVCache* cache = nullptr) const;

  Attention& attention() { return *attention_; }
  FeedForward& feed_forward() { return *feed_forward_; }

 private:
  // OLMo-core's ResidualStream: residual + dropout(x) (alpha is 1 for these block types).
  at::Tensor residual(const at::Tensor& residual, const at::Tensor& x) const;

  BlockSpec spec_;
  std::shared_ptr<Attention> attention_;
  std::shared_ptr<LayerNorm> attention_norm_;
  std::shared_ptr<FeedForward> feed_forward_;
  std::shared_ptr<LayerNorm> feed_forward_norm_;
};

}  // namespace olm::nn
