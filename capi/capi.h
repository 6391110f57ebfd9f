// The C boundary's internals: the opaque structs behind the handles, the try/catch macro pair
// every entry point is wrapped in, and the struct_size-aware copying of option structs.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/error.h"
#include "core/model.h"
#include "core/checkpoint/checkpoint.h"
#include "core/train/trainer.h"
#include "olm.h"

struct olm_error {
  olm_error_code_t code;
  std::string message;
};

struct olm_buffer {
  std::vector<uint8_t> bytes;  // JSON buffers carry a trailing NUL not counted in `size`
  size_t size = 0;
};

struct olm_config {
  olm::Config config;
};

struct olm_tensor {
  at::Tensor tensor;
};

struct olm_model {
  std::shared_ptr<olm::Model> model;
};

struct olm_train_config {
  olm::train::TrainConfig config;
};

namespace olm::dist {
class ProcessGroup;
}

struct olm_dist {
  std::shared_ptr<olm::dist::ProcessGroup> group;
};

struct olm_trainer {
  std::unique_ptr<olm::train::Trainer> trainer;
  // Where the training data stood at the last checkpoint load or fit; saved with checkpoints.
  olm::checkpoint::DataPosition data_position;
};

namespace olm::capi {

olm_buffer* make_buffer(const uint8_t* data, size_t size, bool nul_terminate);

// A config (model or train) serialized into a new buffer: JSON text (NUL-terminated) or the
// binary FlatBuffer.
template <class Config>
olm_buffer* json_buffer(const Config& config) {
  const std::string text = config.to_json();
  return make_buffer(reinterpret_cast<const uint8_t*>(text.data()), text.size(), true);
}
template <class Config>
olm_buffer* flatbuffer_buffer(const Config& config) {
  const auto bytes = config.to_flatbuffer();
  return make_buffer(bytes.data(), bytes.size(), false);
}
olm_step_metrics step_metrics_to_c(const olm::train::StepMetrics& m);

// Converts the exception in flight into an error object; never throws.
olm_error* current_exception_to_error() noexcept;
olm_error* make_error(olm_error_code_t code, const std::string& message) noexcept;

// Applies olm_set_num_threads()'s count to the calling thread when it changed since this thread
// last ran an entry point (ATen's count is per thread under OpenMP); never throws.
void apply_num_threads() noexcept;

at::ScalarType to_scalar_type(olm_dtype dtype, const char* argument);
olm_dtype to_olm_dtype(at::ScalarType type);

inline void require_arg(const void* pointer, const char* name) {
  require(pointer != nullptr, ErrorCode::kInvalidArgument, std::string(name) + ": NULL");
}

// The body of every olm_<x>_options_init_sized: the library's defaults, written only as far
// as the caller's struct reaches (a program built against an older header has a smaller one).
template <class T>
void init_options(T* user, size_t struct_size, void (*defaults)(T*)) {
  if (user == nullptr || struct_size < sizeof(size_t)) return;
  T full;
  defaults(&full);
  const size_t n = struct_size < sizeof(T) ? struct_size : sizeof(T);
  full.struct_size = n;
  std::memcpy(static_cast<void*>(user), &full, n);
}

// Reads a caller's option struct: defaults first, then the bytes the caller's struct_size
// covers, so older callers (smaller structs) get defaults for fields they do not know.
template <class T>
T read_options(const T* user, void (*init)(T*), const char* name) {
  T options;
  init(&options);
  if (user == nullptr) return options;
  require(user->struct_size >= sizeof(size_t), ErrorCode::kInvalidArgument,
          std::string(name) + ".struct_size is " + std::to_string(user->struct_size) +
              ": initialize the struct with its _options_init function");
  const size_t n = user->struct_size < sizeof(T) ? user->struct_size : sizeof(T);
  std::memcpy(static_cast<void*>(&options), user, n);
  options.struct_size = sizeof(T);
  return options;
}

// Writes a result struct into the caller's, up to the caller's struct_size.
template <class T>
void write_result(T* user, const T& result) {
  const size_t n = user->struct_size < sizeof(T) ? user->struct_size : sizeof(T);
  if (n <= sizeof(size_t)) return;
  std::memcpy(reinterpret_cast<char*>(user) + sizeof(size_t),
              reinterpret_cast<const char*>(&result) + sizeof(size_t), n - sizeof(size_t));
}

}  // namespace olm::capi

#define OLM_API_BEGIN try { ::olm::capi::apply_num_threads();
#define OLM_API_END                                    \
  }                                                    \
  catch (...) {                                        \
    return ::olm::capi::current_exception_to_error(); \
  }                                                    \
  return nullptr;
