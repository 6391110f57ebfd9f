#include "core/device.h"

#include <ATen/Context.h>

#include "core/error.h"

namespace olm {

int cuda_device_count() noexcept {
  try {
    if (!at::hasCUDA()) return 0;
    return static_cast<int>(at::getNumGPUs());
  } catch (...) {
    return 0;
  }
}

c10::Device parse_device(const std::string& text, const char* argument_name) {
  const std::string arg = argument_name;
  if (text == "cpu") return c10::Device(c10::kCPU);
  std::string index_text;
  if (text == "cuda") {
    index_text = "0";
  } else if (text.rfind("cuda:", 0) == 0) {
    index_text = text.substr(5);
    bool digits = !index_text.empty() && index_text.size() <= 4;
    for (char c : index_text) digits = digits && c >= '0' && c <= '9';
    require(digits, ErrorCode::kInvalidArgument,
            arg + ": malformed device '" + text + "' (expected \"cpu\", \"cuda\" or \"cuda:N\")");
  } else {
    fail(ErrorCode::kInvalidArgument,
         arg + ": unknown device '" + text + "' (expected \"cpu\", \"cuda\" or \"cuda:N\")");
  }
  const int index = std::stoi(index_text);
  const int count = cuda_device_count();
  require(count > 0, ErrorCode::kDeviceUnavailable,
          arg + ": device '" + text + "' requested but CUDA is not available in this process "
                "(no GPU or driver found)");
  require(index < count, ErrorCode::kDeviceUnavailable,
          arg + ": device '" + text + "' requested but only " + std::to_string(count) +
              " CUDA device(s) exist");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace olm
