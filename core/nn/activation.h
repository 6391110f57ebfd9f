// The activation registry (OLM's ACTIVATIONS): pointwise functions selected by name.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace olm::nn {

// Applies the named activation (validated by the config; throws kInvalidConfig otherwise).
at::Tensor activate(const std::string& name, const at::Tensor& x);

}  // namespace olm::nn
