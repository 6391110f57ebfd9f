// olmo_core.nn.layer_norm: LayerNorm ("default"), RMSNorm ("rms", "qwen_rms"), computed in
// float32 (full_precision) and cast back to the input dtype, and L2Norm ("l2_norm").
#pragma once
#include "core/config/config.h"
#include "core/nn/module.h"
#include "core/nn/parallel.h"

namespace olm::nn {

// olmo_core.nn.functional.l2_normalize: x / ||x|| along dim, the norm taken in float32.
at::Tensor l2_normalize(const at::Tensor& x, int64_t dim = -1);

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t size, const LayerNormSpec& spec, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x) const;

  // Tensor parallelism for a norm over a split projection (QK-norm over all heads): this rank
  // holds size / tp->size() of the `size` features, its weight and bias are its slice, and the
  // statistics (mean square; mean and variance) are taken over the whole across the group.
  // NULL reverts to a local norm.
  void set_tensor_parallel(std::shared_ptr<TensorParallel> tp) { tp_ = std::move(tp); }

 private:
  at::Tensor forward_split(const at::Tensor& x) const;
  std::shared_ptr<TensorParallel> tp_;
  LayerNormSpec spec_;
  int64_t size_;
  at::Tensor* weight_ = nullptr;
  at::Tensor* bias_ = nullptr;
};

}  // namespace olm::nn
