// The C boundary's internals: the opaque structs behind the handles, the try/catch macro pair
// every entry point is wrapped in, and the struct_size-aware copying of option structs.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/error.h"
#include "core/model.h"
#include "core/train/trainer.h"
#include "olm.h"
#include "capi/capi_struct.h"

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

namespace olm::distributed {
class ProcessGroup;
}

struct olm_dist {
  std::shared_ptr<olm::distributed::ProcessGroup> group;
};

struct olm_trainer {
  // The trainer keeps the data position (core/run saves and restores it with checkpoints).
  std::unique_ptr<olm::train::Trainer> trainer;
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

// The body of every olm_<x>_options_init_sized: the library's defaults, written one whole
// field at a time, only the fields that lie entirely inside the caller's struct (a program
// built against an older header has a smaller one). Nothing is written when struct_size
// cannot hold struct_size itself.
template <class T>
void init_options(T* user, size_t struct_size, void (*defaults)(T*)) {
  if (user == nullptr || struct_size < sizeof(size_t)) return;
  T full;
  defaults(&full);
  user->struct_size = struct_size < sizeof(T) ? struct_size : sizeof(T);
  copy_fields(user, &full, struct_size);
}

// Refuses a struct_size smaller than the end of the struct's first field (0 included),
// naming `what` (for example "options.struct_size" or "out->struct_size").
template <class T>
void require_struct_size(size_t struct_size, const std::string& what) {
  constexpr size_t min = min_struct_size<T>();
  require(struct_size >= min, ErrorCode::kInvalidArgument,
          what + " is " + std::to_string(struct_size) + ": " + StructFields<T>::name + " needs at least " +
              std::to_string(min) + " bytes; set it to sizeof(" + StructFields<T>::name + ")");
}

// Reads a caller's option struct: defaults first, then each field that lies entirely inside
// the caller's struct_size, so older callers (smaller structs) get defaults for fields they do
// not know and a field the struct_size covers only in part keeps its default. A larger
// struct_size (a newer caller) is accepted: fields this library does not know are not read.
template <class T>
T read_options(const T* user, void (*init)(T*), const char* name) {
  T options;
  init(&options);
  if (user == nullptr) return options;
  require_struct_size<T>(user->struct_size, std::string(name) + ".struct_size");
  copy_fields(&options, user, user->struct_size);
  options.struct_size = sizeof(T);
  return options;
}

// Checks a caller's result struct before any work is done; `name` is the argument ("out").
template <class T>
void require_result(const T* user, const char* name) {
  require_arg(user, name);
  require_struct_size<T>(user->struct_size, std::string(name) + "->struct_size");
}

// Writes a result struct into the caller's: each field that lies entirely inside the caller's
// struct_size; the caller's struct_size and every byte past the last whole field stay as they
// were. Refuses (before writing anything) a struct_size smaller than the first field's end.
template <class T>
void write_result(T* user, const T& result, const char* name = "out") {
  require_result(user, name);
  copy_fields(user, &result, user->struct_size);
}

}  // namespace olm::capi

#define OLM_API_BEGIN try { ::olm::capi::apply_num_threads();
#define OLM_API_END                                    \
  }                                                    \
  catch (...) {                                        \
    return ::olm::capi::current_exception_to_error(); \
  }                                                    \
  return nullptr;
