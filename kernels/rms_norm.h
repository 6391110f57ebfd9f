// RMSNorm forward: weight * x * rsqrt(mean(x^2, -1) + eps), over the last dimension.
// On CUDA float32 inputs outside autograd it runs the fused kernel in rms_norm.cu (one pass
// over the row instead of the four ATen kernels the reference launches); everywhere else it
// runs the ATen reference, which is also the definition the kernel is tested against.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace olm::kernels {

at::Tensor rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps);
at::Tensor rms_norm_reference(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                              double eps);

// True when this build has the CUDA kernel compiled in.
bool rms_norm_has_cuda_kernel();

#ifdef OLM_WITH_CUDA_KERNELS
// Launches on `stream` (a cudaStream_t). x and y are (rows, cols) contiguous float32 device
// arrays; weight is NULL or cols floats. Returns a cudaError_t as int.
int launch_rms_norm_f32(const float* x, const float* weight, float* y, int64_t rows, int64_t cols,
                        float eps, void* stream);
#endif

}  // namespace olm::kernels
