#include <c10/core/Allocator.h>

#include <new>

#include "capi/capi.h"
#include "core/device.h"

namespace olm::capi {
namespace {

// Returned when even the error object cannot be allocated; olm_error_free never frees it.
olm_error g_out_of_memory_error{OLM_ERR_OUT_OF_MEMORY, "out of memory (while reporting an error)"};

}  // namespace

// A message as C reads it: a NUL byte (from a caller's buffer, a file's tensor name, ...)
// would end the C string early, so each is written as the two characters "\0"; and a
// LibTorch message's "Exception raised from ..." context and stack frames are dropped.
static std::string c_message(const std::string& message) {
  std::string text = message;
  const size_t raised = text.find("Exception raised from");
  if (raised != std::string::npos) text.erase(raised);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\0')
      out += "\\0";
    else
      out += c;
  }
  return out;
}

olm_error* make_error(olm_error_code_t code, const std::string& message) noexcept {
  try {
    return new olm_error{code, c_message(message)};
  } catch (...) {
    return &g_out_of_memory_error;
  }
}

olm_error* current_exception_to_error() noexcept {
  try {
    throw;
  } catch (const olm::Error& e) {
    return make_error(static_cast<olm_error_code_t>(e.code()), e.what());
  } catch (const c10::OutOfMemoryError& e) {
    return make_error(OLM_ERR_OUT_OF_MEMORY, e.what_without_backtrace());
  } catch (const c10::DistError& e) {
    return make_error(OLM_ERR_DISTRIBUTED, std::string("c10d: ") + e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return make_error(OLM_ERR_INTERNAL, std::string("LibTorch: ") + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return make_error(OLM_ERR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return make_error(OLM_ERR_INTERNAL, e.what());
  } catch (...) {
    return make_error(OLM_ERR_INTERNAL, "unknown C++ exception");
  }
}

}  // namespace olm::capi

extern "C" {

const char* olm_version(void) {
#define OLM_STR2(x) #x
#define OLM_STR(x) OLM_STR2(x)
  return OLM_STR(OLM_VERSION_MAJOR) "." OLM_STR(OLM_VERSION_MINOR) "." OLM_STR(OLM_VERSION_PATCH);
}

olm_error_code_t olm_error_code(const olm_error* error) { return error ? error->code : OLM_OK; }

const char* olm_error_message(const olm_error* error) {
  return error ? error->message.c_str() : "";
}

void olm_error_free(olm_error* error) {
  if (error != &olm::capi::g_out_of_memory_error) delete error;
}

const uint8_t* olm_buffer_data(const olm_buffer* buffer) {
  return buffer ? buffer->bytes.data() : nullptr;
}

size_t olm_buffer_size(const olm_buffer* buffer) { return buffer ? buffer->size : 0; }

void olm_buffer_free(olm_buffer* buffer) { delete buffer; }

int32_t olm_cuda_device_count(void) { return olm::cuda_device_count(); }

}  // extern "C"
