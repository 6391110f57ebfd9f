#include "kernels/rms_norm.h"

#include <ATen/core/grad_mode.h>

#ifdef OLM_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAStream.h>
#endif

#include "core/error.h"

namespace olm::kernels {

at::Tensor rms_norm_reference(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                              double eps) {
  // Same operations and order as OLMo-core's RMSNorm.forward.
  auto variance = x.pow(2).mean(-1, /*keepdim=*/true);
  auto y = x * at::rsqrt(variance + eps);
  if (weight) y = *weight * y;
  return y;
}

bool rms_norm_has_cuda_kernel() {
#ifdef OLM_WITH_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

at::Tensor rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps) {
#ifdef OLM_WITH_CUDA_KERNELS
  const bool fusable = x.is_cuda() && x.scalar_type() == at::kFloat && x.dim() >= 1 &&
                       x.size(-1) > 0 && !at::GradMode::is_enabled() &&
                       (!weight || (weight->is_cuda() && weight->scalar_type() == at::kFloat));
  if (fusable) {
    const auto input = x.contiguous();
    const auto w = weight ? std::optional<at::Tensor>(weight->contiguous()) : std::nullopt;
    auto y = at::empty_like(input);
    const int64_t cols = input.size(-1);
    const int64_t rows = input.numel() / cols;
    if (rows > 0) {
      auto stream = c10::cuda::getCurrentCUDAStream(input.device().index());
      const int rc = launch_rms_norm_f32(input.data_ptr<float>(), w ? w->data_ptr<float>() : nullptr,
                                         y.data_ptr<float>(), rows, cols, static_cast<float>(eps),
                                         static_cast<void*>(stream.stream()));
      require(rc == 0, ErrorCode::kInternal,
              "rms_norm CUDA kernel launch failed (cudaError " + std::to_string(rc) + ")");
    }
    return y;
  }
#endif
  return rms_norm_reference(x, weight, eps);
}

}  // namespace olm::kernels
