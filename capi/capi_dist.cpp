#include <cmath>

#include "capi/capi.h"
#include "core/distributed/process_group.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::init_options;
using olm::capi::read_options;
using olm::capi::require_arg;

extern "C" {

static void dist_defaults(olm_dist_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_dist_options);
  options->backend = OLM_DIST_AUTO;
  options->device = "cpu";
  options->rank = -1;
  options->world_size = -1;
  options->local_rank = -1;
  options->local_world_size = -1;
  options->master_addr = nullptr;
  options->master_port = 0;
  options->timeout_seconds = 300.0;
}

void olm_dist_options_init_sized(olm_dist_options* options, size_t struct_size) {
  init_options(options, struct_size, dist_defaults);
}

olm_error* olm_dist_create(const olm_dist_options* options, olm_dist** out) {
  OLM_API_BEGIN
  require_arg(out, "out");
  const auto opts = read_options(options, dist_defaults, "options");
  olm::distributed::ProcessGroupOptions o;
  // OLM_DIST_AUTO/GLOO/NCCL are BackendKind's values; ProcessGroup::create refuses any other.
  static_assert(OLM_DIST_AUTO == 0 && OLM_DIST_GLOO == 1 && OLM_DIST_NCCL == 2);
  o.backend = static_cast<olm::distributed::BackendKind>(opts.backend);
  o.device = opts.device ? opts.device : "cpu";
  o.rank = opts.rank;
  o.world_size = opts.world_size;
  o.local_rank = opts.local_rank;
  o.local_world_size = opts.local_world_size;
  if (opts.master_addr) o.master_addr = opts.master_addr;
  o.master_port = opts.master_port;
  require(std::isfinite(opts.timeout_seconds) && opts.timeout_seconds > 0 && opts.timeout_seconds < 1e7,
          ErrorCode::kInvalidArgument, "options.timeout_seconds: must be positive");
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(opts.timeout_seconds * 1000.0)));
  auto group = olm::distributed::ProcessGroup::create(o);
  *out = new olm_dist{std::move(group)};
  OLM_API_END
}

olm_error* olm_dist_info_get(const olm_dist* dist, olm_dist_info* out) {
  OLM_API_BEGIN
  require_arg(dist, "dist");
  olm::capi::require_result(out, "out");
  const auto& g = *dist->group;
  olm_dist_info info{};
  info.struct_size = sizeof(info);
  info.rank = g.rank();
  info.world_size = g.world_size();
  info.local_rank = g.local_rank();
  info.local_world_size = g.local_world_size();
  info.backend = g.backend() == olm::distributed::BackendKind::kNccl ? OLM_DIST_NCCL : OLM_DIST_GLOO;
  info.collectives = g.stats().collectives;
  info.bytes = g.stats().bytes;
  olm::capi::write_result(out, info);
  OLM_API_END
}

olm_error* olm_dist_barrier(olm_dist* dist) {
  OLM_API_BEGIN
  require_arg(dist, "dist");
  dist->group->barrier();
  OLM_API_END
}

olm_error* olm_dist_all_reduce_sum(olm_dist* dist, olm_tensor* tensor) {
  OLM_API_BEGIN
  require_arg(dist, "dist");
  require_arg(tensor, "tensor");
  const auto& t = tensor->tensor;
  require(t.scalar_type() == at::kFloat || t.scalar_type() == at::kLong, ErrorCode::kInvalidArgument,
          "tensor: dtype must be float32 or int64");
  // olm_tensor data may be shared with views; reduce a contiguous copy on the backend's device
  // (the CPU for gloo, the rank's GPU for nccl) and write it back.
  auto buffer = t.contiguous().to(dist->group->comm_device()).clone();
  dist->group->all_reduce_sum({buffer});
  tensor->tensor.copy_(buffer);
  OLM_API_END
}

olm_error* olm_dist_shutdown(olm_dist* dist) {
  OLM_API_BEGIN
  require_arg(dist, "dist");
  dist->group->shutdown();
  OLM_API_END
}

void olm_dist_free(olm_dist* dist) { delete dist; }

olm_error* olm_trainer_set_dist(olm_trainer* trainer, olm_dist* dist) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  trainer->trainer->set_process_group(dist ? dist->group : nullptr);
  OLM_API_END
}

olm_error* olm_trainer_layout_get(const olm_trainer* trainer, olm_trainer_layout* out) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  olm::capi::require_result(out, "out");
  const olm::train::Trainer& t = *trainer->trainer;
  olm_trainer_layout layout{};
  layout.struct_size = sizeof(layout);
  layout.data_parallel_rank = t.data_parallel_rank();
  layout.data_parallel_size = t.data_parallel_world_size();
  const auto& tp = t.tensor_parallel_group();
  layout.tensor_parallel_rank = tp ? tp->rank() : 0;
  layout.tensor_parallel_size = tp ? tp->world_size() : 1;
  const auto& cp = t.context_parallel_group();
  layout.context_parallel_rank = cp ? cp->rank() : 0;
  layout.context_parallel_size = cp ? cp->world_size() : 1;
  olm::capi::write_result(out, layout);
  OLM_API_END
}

}  // extern "C"
