// C entry points for parameters by name, DLPack exchange and the library's CPU thread count.
#include <ATen/DLConvertor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "capi/capi.h"
#include "core/io/nearest_name.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::require_arg;

namespace {

// ---- Threads: at::set_num_threads is per OS thread under OpenMP (omp_set_num_threads and
// MKL's local count), and a thread that ran ATen work once keeps the count it saw then. The
// C API is called from any thread (Go moves goroutines between them), so the count is kept
// here with a generation number and every entry point applies it to its thread when it changed.
std::atomic<int32_t> g_num_threads{0};  // 0: never set, ATen's default
std::atomic<uint64_t> g_threads_generation{0};

// The bound on olm_set_num_threads (documented in olm.h).
constexpr int32_t kMaxThreads = 1024;

std::string shape_string(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

const char* kTiedName = "lm_head.w_out.weight";

// The state-dict entry called `name` (parameters, then persistent buffers such as an MoE
// router's score_bias), or an error naming the argument with the nearest known name.
at::Tensor& find_state(olm::Model& model, const char* name) {
  auto state = model.module().named_state();
  const std::string wanted = name;
  for (auto& entry : state)
    if (entry.name == wanted) return *entry.tensor;
  if (model.config().spec().tie_word_embeddings && wanted == kTiedName) {
    // OLMo-core's state dict lists the shared table under both names.
    for (auto& entry : state)
      if (entry.name == "embeddings.weight") return *entry.tensor;
  }
  std::vector<std::string> names;
  for (const auto& entry : state) names.push_back(entry.name);
  const auto nearest = olm::io::nearest_name(wanted, names);
  olm::fail(ErrorCode::kInvalidArgument,
            "name: the model has no parameter \"" + wanted + "\"" +
                (nearest.name ? "; did you mean \"" + *nearest.name + "\"?" : std::string()) +
                " (olm_model_parameter_info lists the " + std::to_string(state.size()) + " names)");
}

std::optional<at::ScalarType> dlpack_scalar_type(const DLDataType& t) {
  if (t.lanes != 1) return std::nullopt;
  if (t.code == kDLInt && t.bits == 32) return at::kInt;
  if (t.code == kDLInt && t.bits == 64) return at::kLong;
  if (t.code == kDLFloat && t.bits == 32) return at::kFloat;
  if (t.code == kDLFloat && t.bits == 16) return at::kHalf;
  if (t.code == kDLBfloat && t.bits == 16) return at::kBFloat16;
  return std::nullopt;
}

}  // namespace

namespace olm::capi {

void apply_num_threads() noexcept {
  thread_local uint64_t applied = 0;
  const uint64_t generation = g_threads_generation.load(std::memory_order_acquire);
  if (generation == applied) return;
  applied = generation;
  try {
    at::set_num_threads(g_num_threads.load(std::memory_order_relaxed));
  } catch (...) {
    // A build whose thread pool refuses late changes keeps its count; olm_get_num_threads says so.
  }
}

}  // namespace olm::capi

extern "C" {

olm_error* olm_model_get_parameter(const olm_model* model, const char* name, olm_tensor** out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(name, "name");
  require_arg(out, "out");
  model->model->require_materialized("model");
  const at::Tensor& param = find_state(*model->model, name);
  at::Tensor copy = param.detach().clone(at::MemoryFormat::Contiguous);
  *out = new olm_tensor{std::move(copy)};
  OLM_API_END
}

olm_error* olm_model_set_parameter(olm_model* model, const char* name, const olm_tensor* value) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(name, "name");
  require_arg(value, "value");
  at::Tensor& param = find_state(*model->model, name);
  const at::Tensor& v = value->tensor;
  require(v.sizes() == param.sizes(), ErrorCode::kInvalidArgument,
          std::string("value: shape ") + shape_string(v.sizes()) + " differs from " + name + "'s shape " +
              shape_string(param.sizes()));
  require(v.scalar_type() == param.scalar_type() || v.scalar_type() == at::kFloat, ErrorCode::kInvalidArgument,
          std::string("value: dtype ") + c10::toString(v.scalar_type()) + " is neither " + name + "'s dtype (" +
              c10::toString(param.scalar_type()) + ") nor float32");
  model->model->require_materialized("model");
  // Convert and move first, so a failure leaves the parameter as it was; then copy in place:
  // the tensor object, its requires_grad and the optimizer state keyed on it stay.
  const at::Tensor staged = v.to(param.device(), param.scalar_type());
  at::NoGradGuard no_grad;
  param.copy_(staged);
  OLM_API_END
}

olm_error* olm_tensor_to_dlpack(const olm_tensor* tensor, void** out_dl_managed_tensor) {
  OLM_API_BEGIN
  require_arg(tensor, "tensor");
  require_arg(out_dl_managed_tensor, "out_dl_managed_tensor");
  // at::toDLPack holds a reference to the tensor's storage until the deleter runs.
  *out_dl_managed_tensor = at::toDLPack(tensor->tensor.detach());
  OLM_API_END
}

namespace {

// The deleter comes from a foreign producer (C, Rust, Go, a C++ library with its own copy of
// dlpack.h): its parameter type is that producer's DLManagedTensor, the same layout under
// another name. Across the C ABI that is the contract, so clang's -fsanitize=function, which
// compares the C++ type names, is off for this one call.
#if defined(__clang__)
__attribute__((no_sanitize("function")))
#endif
void call_producer_deleter(DLManagedTensor* managed) {
  if (managed->deleter) managed->deleter(managed);
}

}  // namespace

olm_error* olm_tensor_from_dlpack(void* dl_managed_tensor, olm_tensor** out) {
  OLM_API_BEGIN
  require_arg(dl_managed_tensor, "dl_managed_tensor");
  require_arg(out, "out");
  auto* managed = static_cast<DLManagedTensor*>(dl_managed_tensor);
  const DLTensor& dl = managed->dl_tensor;
  require(dl.ndim >= 0 && dl.ndim <= OLM_MAX_DIMS, ErrorCode::kInvalidArgument,
          "dl_managed_tensor: ndim " + std::to_string(dl.ndim) + " is outside [0, OLM_MAX_DIMS=" +
              std::to_string(OLM_MAX_DIMS) + "]");
  require(dl.ndim == 0 || dl.shape != nullptr, ErrorCode::kInvalidArgument, "dl_managed_tensor: shape is NULL");
  for (int32_t i = 0; i < dl.ndim; ++i)
    require(dl.shape[i] >= 0, ErrorCode::kInvalidArgument,
            "dl_managed_tensor: shape[" + std::to_string(i) + "] is negative (" + std::to_string(dl.shape[i]) + ")");
  require(dlpack_scalar_type(dl.dtype).has_value(), ErrorCode::kInvalidArgument,
          "dl_managed_tensor: dtype (code " + std::to_string(dl.dtype.code) + ", " + std::to_string(dl.dtype.bits) +
              " bits, " + std::to_string(dl.dtype.lanes) +
              " lanes) has no OLM_DTYPE_*; int32, int64, float32, bfloat16 and float16 are accepted");
  require(dl.device.device_type == kDLCPU || dl.device.device_type == kDLCUDA, ErrorCode::kInvalidArgument,
          "dl_managed_tensor: device type " + std::to_string(static_cast<int>(dl.device.device_type)) +
              " is neither kDLCPU nor kDLCUDA");
  require(dl.byte_offset == 0 || dl.data != nullptr, ErrorCode::kInvalidArgument,
          "dl_managed_tensor: data is NULL with a byte_offset");
  // ATen refuses a non-zero byte_offset: it reads a copy of the struct whose data pointer has the
  // offset applied (only during the call). Ownership passes only once at::fromDLPack returns: the
  // deleter given to it calls the caller's when the last reference to the memory goes; a throw
  // before leaves the tensor with the caller.
  DLManagedTensor view = *managed;
  if (view.dl_tensor.byte_offset != 0) {
    view.dl_tensor.data = static_cast<char*>(view.dl_tensor.data) + view.dl_tensor.byte_offset;
    view.dl_tensor.byte_offset = 0;
  }
  at::Tensor t = at::fromDLPack(&view, [managed](void*) { call_producer_deleter(managed); });
  *out = new olm_tensor{std::move(t)};
  OLM_API_END
}

olm_error* olm_set_num_threads(int32_t num_threads) {
  OLM_API_BEGIN
  require(num_threads >= 1 && num_threads <= kMaxThreads, ErrorCode::kInvalidArgument,
          "num_threads: " + std::to_string(num_threads) + " is outside [1, " + std::to_string(kMaxThreads) + "]");
  at::set_num_threads(num_threads);
  g_num_threads.store(num_threads, std::memory_order_relaxed);
  g_threads_generation.fetch_add(1, std::memory_order_acq_rel);
  olm::capi::apply_num_threads();
  OLM_API_END
}

int32_t olm_get_num_threads(void) {
  try {
    olm::capi::apply_num_threads();
    return static_cast<int32_t>(at::get_num_threads());
  } catch (...) {
    return 1;
  }
}

}  // extern "C"
