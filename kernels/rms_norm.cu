// Fused RMSNorm forward for float32: one block per row, the row read once for the sum of
// squares and once more for the output (the ATen reference launches pow, mean, add+rsqrt and
// two multiplies, each a full pass). Kept free of ATen headers so nvcc compiles it in seconds.
#include <cuda_runtime.h>

#include <cstdint>

namespace olm::kernels {
namespace {

constexpr int kThreads = 256;

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void __launch_bounds__(kThreads)
    rms_norm_f32_kernel(const float* __restrict__ x, const float* __restrict__ weight,
                        float* __restrict__ y, int64_t cols, float eps) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * cols;
  float* yr = y + row * cols;

  float sum = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const float v = xr[c];
    sum += v * v;
  }
  __shared__ float partial[kThreads / 32];
  sum = warp_sum(sum);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.f;
    v = warp_sum(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float inv_rms = rsqrtf(partial[0] / static_cast<float>(cols) + eps);

  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const float normed = xr[c] * inv_rms;
    yr[c] = weight ? weight[c] * normed : normed;
  }
}

}  // namespace

int launch_rms_norm_f32(const float* x, const float* weight, float* y, int64_t rows, int64_t cols,
                        float eps, void* stream) {
  if (rows <= 0 || cols <= 0) return 0;
  if (rows > 0x7fffffffLL) return static_cast<int>(cudaErrorInvalidConfiguration);
  rms_norm_f32_kernel<<<static_cast<unsigned>(rows), kThreads, 0,
                        static_cast<cudaStream_t>(stream)>>>(x, weight, y, cols, eps);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace olm::kernels
