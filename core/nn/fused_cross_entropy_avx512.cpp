// Compiled with ATen's flags and defines for its avx512 CPU capability (CMakeLists.txt).
#include "core/nn/fused_cross_entropy_rows.h"

namespace olm::nn::cross_entropy_kernel {

void backward_rows_avx512(const BackwardRows& rows, int64_t begin, int64_t end) { backward_rows(rows, begin, end); }

}  // namespace olm::nn::cross_entropy_kernel
