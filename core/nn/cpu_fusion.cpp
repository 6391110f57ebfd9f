#include "core/nn/cpu_fusion.h"

#include <atomic>

namespace olm::nn {

namespace {
std::atomic<bool> enabled{true};
}  // namespace

bool cpu_fusion_enabled() { return enabled.load(std::memory_order_relaxed); }
void set_cpu_fusion_enabled(bool on) { enabled.store(on, std::memory_order_relaxed); }

}  // namespace olm::nn
