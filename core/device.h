#pragma once
#include <c10/core/Device.h>
#include <string>

namespace olm {

// Parses "cpu", "cuda" or "cuda:N" and checks the device exists in this process.
// Throws Error(kInvalidArgument) for malformed strings, Error(kDeviceUnavailable) when CUDA
// or device N is absent.
c10::Device parse_device(const std::string& text, const char* argument_name);

int cuda_device_count() noexcept;

}  // namespace olm
