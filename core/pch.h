// Precompiled header for the core: the narrow ATen/c10 headers the core uses, nothing from
// torch/csrc/api (torch::nn), whose headers triple the compile time of every file.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>
