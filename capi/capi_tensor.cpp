#include <limits>

#include "capi/capi.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::require_arg;

namespace olm::capi {

at::ScalarType to_scalar_type(olm_dtype dtype, const char* argument) {
  switch (dtype) {
    case OLM_DTYPE_INT32: return at::kInt;
    case OLM_DTYPE_INT64: return at::kLong;
    case OLM_DTYPE_FLOAT32: return at::kFloat;
    case OLM_DTYPE_BFLOAT16: return at::kBFloat16;
    case OLM_DTYPE_FLOAT16: return at::kHalf;
    default:
      fail(ErrorCode::kInvalidArgument,
           std::string(argument) + ": unknown dtype " + std::to_string(dtype));
  }
}

olm_dtype to_olm_dtype(at::ScalarType type) {
  switch (type) {
    case at::kInt: return OLM_DTYPE_INT32;
    case at::kLong: return OLM_DTYPE_INT64;
    case at::kFloat: return OLM_DTYPE_FLOAT32;
    case at::kBFloat16: return OLM_DTYPE_BFLOAT16;
    case at::kHalf: return OLM_DTYPE_FLOAT16;
    default:
      fail(ErrorCode::kInternal, std::string("tensor has dtype ") + c10::toString(type) +
                                     ", which the C API does not represent");
  }
}

}  // namespace olm::capi

extern "C" {

olm_error* olm_tensor_create(olm_dtype dtype, const int64_t* shape, size_t ndim, const void* data,
                             size_t data_size, olm_tensor** out) {
  OLM_API_BEGIN
  require_arg(out, "out");
  const at::ScalarType type = olm::capi::to_scalar_type(dtype, "dtype");
  require(ndim <= OLM_MAX_DIMS, ErrorCode::kInvalidArgument,
          "ndim: " + std::to_string(ndim) + " exceeds OLM_MAX_DIMS (" +
              std::to_string(OLM_MAX_DIMS) + ")");
  require(ndim == 0 || shape != nullptr, ErrorCode::kInvalidArgument, "shape: NULL with ndim > 0");
  std::vector<int64_t> sizes(shape, shape + ndim);
  const uint64_t element_size = c10::elementSize(type);
  uint64_t nbytes = element_size;
  for (size_t i = 0; i < ndim; ++i) {
    require(sizes[i] >= 0, ErrorCode::kInvalidArgument,
            "shape[" + std::to_string(i) + "]: negative size " + std::to_string(sizes[i]));
    const auto d = static_cast<uint64_t>(sizes[i]);
    require(d == 0 || nbytes <= (std::numeric_limits<uint64_t>::max() >> 1) / d,
            ErrorCode::kInvalidArgument, "shape: the tensor's byte size overflows");
    nbytes *= d;
  }
  require(nbytes == data_size, ErrorCode::kInvalidArgument,
          "data_size: " + std::to_string(data_size) + " bytes given but the dtype and shape need " +
              std::to_string(nbytes));
  require(data != nullptr || nbytes == 0, ErrorCode::kInvalidArgument, "data: NULL");
  auto tensor = at::empty(sizes, at::TensorOptions().dtype(type));
  if (nbytes > 0) std::memcpy(tensor.data_ptr(), data, nbytes);
  *out = new olm_tensor{std::move(tensor)};
  OLM_API_END
}

olm_error* olm_tensor_dtype(const olm_tensor* tensor, olm_dtype* out) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  require_arg(out, "out");
  *out = olm::capi::to_olm_dtype(tensor->tensor.scalar_type());
  OLM_API_END
}

olm_error* olm_tensor_ndim(const olm_tensor* tensor, size_t* out) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  require_arg(out, "out");
  *out = static_cast<size_t>(tensor->tensor.dim());
  OLM_API_END
}

olm_error* olm_tensor_shape(const olm_tensor* tensor, int64_t* shape, size_t capacity) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  const auto sizes = tensor->tensor.sizes();
  require(capacity >= sizes.size(), ErrorCode::kInvalidArgument,
          "capacity: " + std::to_string(capacity) + " is smaller than the tensor's " +
              std::to_string(sizes.size()) + " dimensions");
  require(shape != nullptr || sizes.empty(), ErrorCode::kInvalidArgument, "shape: NULL");
  for (size_t i = 0; i < sizes.size(); ++i) shape[i] = sizes[i];
  OLM_API_END
}

olm_error* olm_tensor_nbytes(const olm_tensor* tensor, size_t* out) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  require_arg(out, "out");
  *out = static_cast<size_t>(tensor->tensor.numel()) * tensor->tensor.element_size();
  OLM_API_END
}

olm_error* olm_tensor_copy_to_host(const olm_tensor* tensor, void* dst, size_t dst_size) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  const size_t nbytes = static_cast<size_t>(tensor->tensor.numel()) * tensor->tensor.element_size();
  require(dst_size >= nbytes, ErrorCode::kInvalidArgument,
          "dst_size: " + std::to_string(dst_size) + " bytes is smaller than the tensor's " +
              std::to_string(nbytes));
  require(dst != nullptr || nbytes == 0, ErrorCode::kInvalidArgument, "dst: NULL");
  if (nbytes == 0) return nullptr;
  const auto host = tensor->tensor.to(at::kCPU).contiguous();
  std::memcpy(dst, host.data_ptr(), nbytes);
  OLM_API_END
}

void olm_tensor_free(olm_tensor* tensor) { delete tensor; }

}  // extern "C"
