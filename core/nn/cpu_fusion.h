// Whether olm's fused CPU kernels replace the ATen op chains they were written for (the
// cross-entropy backward, RoPE, ...). Every fused kernel is bit-identical to the chain it
// replaces, on every CPU capability ATen dispatches to, so the switch changes speed and memory
// only; it exists for A/B measurements (`olm bench --no-fused-kernels`). Default: enabled.
#pragma once

namespace olm::nn {

bool cpu_fusion_enabled();
void set_cpu_fusion_enabled(bool enabled);

}  // namespace olm::nn
