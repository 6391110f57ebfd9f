// c10d process groups (torch.distributed's init_process_group for one flat group): rendezvous
// over a TCPStore, PyTorch's own Gloo backend for CPU tensors and NCCL for CUDA tensors,
// configured from explicit options or from the launcher's environment (torchrun, Slurm).
// No collective is implemented here; every one is c10d's.
//
// A ProcessGroup is a 1-D mesh with one named dimension ("dp" for the world). A DeviceMesh
// (torch's DeviceMesh, as OLMo-core's build_world_mesh builds it) lays the world's ranks out
// over named dimensions and gives each rank one sub-group per dimension: HSDP uses
// (dp_replicate, dp_shard); tensor, context and pipeline parallelism will add dimensions.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace olm::distributed {

enum class BackendKind { kAuto = 0, kGloo = 1, kNccl = 2 };

// The largest world_size a group accepts (c10d and Gloo count ranks in an int; a rendezvous of
// more processes than this is a mistake, not a job).
constexpr int64_t kMaxWorldSize = int64_t{1} << 20;

struct ProcessGroupOptions {
  BackendKind backend = BackendKind::kAuto;  // auto: nccl for a CUDA device, else gloo
  std::string device = "cpu";                // the device training runs on (for kAuto)
  // -1 / empty / 0: read from the environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
  // MASTER_ADDR, MASTER_PORT; else SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
  // SLURM_NTASKS_PER_NODE), then defaults (a single process; 127.0.0.1:29500).
  int64_t rank = -1;
  int64_t world_size = -1;
  int64_t local_rank = -1;
  int64_t local_world_size = -1;
  std::string master_addr;
  int master_port = 0;
  // The whole rendezvous (reaching the store, every rank's arrival) fails after this long from
  // the start of create(), on every rank and whatever the world size; so does every
  // collective, instead of hanging.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

// Options with the unset fields filled from the environment and defaults. Throws
// kInvalidArgument naming the field ("options.rank") when a value the caller set is out of
// range (every door, C++, C and the command line, is checked here and only here), naming the
// variable when the environment's is malformed, and saying which when the two together are
// inconsistent (rank < world_size, local_rank < local_world_size).
ProcessGroupOptions resolve_options(ProcessGroupOptions options);

// True when the environment describes a multi-process launch (WORLD_SIZE or SLURM_NTASKS > 1).
bool launched_distributed();

struct MeshDim {
  std::string name;  // "dp" for now
  int64_t size = 1;
};

// Communication counters (this rank's side of every collective).
struct CommStats {
  int64_t collectives = 0;
  int64_t bytes = 0;  // payload bytes this rank contributed
};

// An in-flight collective; wait() rethrows its failure as an olm::Error.
class Pending {
 public:
  virtual ~Pending() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  // Joins the group: rendezvous through the TCPStore (rank 0 hosts it unless torchrun's agent
  // does), then the backend's connections. A rank that does not arrive within the timeout
  // makes the others fail with kDistributed naming it.
  static std::shared_ptr<ProcessGroup> create(const ProcessGroupOptions& options);
  ~ProcessGroup();

  int64_t rank() const { return options_.rank; }
  int64_t world_size() const { return options_.world_size; }
  int64_t local_rank() const { return options_.local_rank; }
  int64_t local_world_size() const { return options_.local_world_size; }
  BackendKind backend() const { return backend_; }
  const char* backend_name() const { return backend_ == BackendKind::kNccl ? "nccl" : "gloo"; }
  const ProcessGroupOptions& options() const { return options_; }
  const std::vector<MeshDim>& mesh() const { return mesh_; }
  const CommStats& stats() const { return stats_; }
  // Where the backend's tensors live: the CPU for gloo, cuda:local_rank for nccl.
  at::Device comm_device() const {
    return backend_ == BackendKind::kNccl ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(options_.local_rank))
                                          : at::Device(at::kCPU);
  }

  // Collectives on tensors of the backend's device (CPU for gloo, CUDA for nccl). In place.
  std::unique_ptr<Pending> all_reduce_sum_async(std::vector<at::Tensor> tensors);
  void all_reduce_sum(std::vector<at::Tensor> tensors) { all_reduce_sum_async(std::move(tensors))->wait(); }
  void broadcast(std::vector<at::Tensor> tensors, int64_t root);
  // c10d's all_gather_into_tensor (Backend::_allgather_base): `output` (world_size * n
  // elements, contiguous) receives every rank's `input` (n elements), rank r's at r * n.
  // Counted as output's bytes (the gathered payload this rank receives).
  std::unique_ptr<Pending> all_gather_into_async(at::Tensor output, at::Tensor input);
  // c10d's reduce_scatter_tensor (Backend::_reduce_scatter_base) with SUM: `output` (n
  // elements) receives slice r (elements [r*n, (r+1)*n)) of `input` summed over the ranks.
  // Counted as input's bytes (the full payload this rank contributes).
  std::unique_ptr<Pending> reduce_scatter_sum_async(at::Tensor output, at::Tensor input);
  // Point to point (c10d's Backend::send / recv): `tensor` (contiguous, of the backend's
  // device) goes to, or is filled from, rank `peer` of this group, which must post the
  // matching recv / send with the same `tag` (messages between two ranks with one tag arrive
  // in order; different tags keep independent streams apart). Both return at once, so a ring
  // step posts its send to the next rank and its recv from the previous one together. A send
  // counts its tensor's bytes, a recv none (its sender counts them).
  std::unique_ptr<Pending> send_async(at::Tensor tensor, int64_t peer, int64_t tag = 0);
  std::unique_ptr<Pending> recv_async(at::Tensor tensor, int64_t peer, int64_t tag = 0);
  // c10d's all_to_all_single with equal splits (Backend::alltoall_base): input and output
  // (contiguous, the same shape, dim 0 a multiple of world_size) are world_size equal slices
  // along dim 0; slice j of input goes to rank j, and slice j of output comes from rank j.
  // Counted as the bytes this rank sends to the others (input's bytes but its own slice).
  std::unique_ptr<Pending> all_to_all_async(at::Tensor output, at::Tensor input);
  void barrier();
  // A final barrier, then the connections are closed; later collectives fail.
  void shutdown();

  // A group of some of this group's ranks (c10d's new_group): `ranks` lists them in their new
  // order, and `name` (a mesh dimension and index, e.g. "dp_shard/1") keeps sub-groups apart.
  // Only the members call it, each with the same arguments, and every member creates its
  // sub-groups in the same order. The sub-group names its failed ranks by their rank in this
  // group.
  std::shared_ptr<ProcessGroup> new_subgroup(const std::string& name, const std::vector<int64_t>& ranks);

  // Turns a failed collective into an olm::Error naming the ranks that are gone (found
  // through the store within a short grace period). Never returns.
  [[noreturn]] void fail_collective(const std::string& what, const std::string& cause);

  struct Impl;

 private:
  explicit ProcessGroup(ProcessGroupOptions options);
  // "rank N" for rank `peer` of this group, N its rank in the world group (as failures name it).
  std::string peer_name(int64_t peer) const;
  void check_peer(const at::Tensor& tensor, int64_t peer, const char* op) const;
  void connect_backend();  // the backend over impl_->store, for options_'s rank and size
  ProcessGroupOptions options_;
  BackendKind backend_ = BackendKind::kGloo;
  std::vector<MeshDim> mesh_;
  std::vector<int64_t> parent_ranks_;  // sub-groups: each member's rank in the world group
  CommStats stats_;
  std::unique_ptr<Impl> impl_;
};

// The world's ranks laid out row-major over named dimensions (the last varies fastest, so it
// spans consecutive ranks, as within a node). For each dimension, this rank's sub-group holds
// the ranks that share its coordinates in every other dimension.
class DeviceMesh {
 public:
  // A collective: every rank of `world` calls it with the same dimensions, whose sizes must
  // multiply to world_size (kInvalidConfig naming them otherwise) and whose names differ.
  static DeviceMesh build(const std::shared_ptr<ProcessGroup>& world, const std::vector<MeshDim>& dims);

  const std::vector<MeshDim>& dims() const { return dims_; }
  // This rank's coordinate along dimension `name`, and its sub-group there (kInvalidArgument
  // naming the known dimensions for an unknown name).
  int64_t coordinate(const std::string& name) const;
  const std::shared_ptr<ProcessGroup>& group(const std::string& name) const;
  const std::vector<std::shared_ptr<ProcessGroup>>& groups() const { return groups_; }
  // A collective over the world (every rank calls it with the same names, in the same order
  // as its other flatten calls): the sub-group of the ranks sharing this rank's coordinates in
  // every dimension but `names`, ordered row-major over those (DeviceMesh's _flatten, as
  // OLMo-core's "dp_cp" for the gradient reduction of data and context parallelism). Its
  // rank is this rank's row-major coordinate over `names`; groups() lists it after the dims'.
  std::shared_ptr<ProcessGroup> flatten(const std::vector<std::string>& names, const std::string& name);

 private:
  size_t index(const std::string& name) const;
  std::shared_ptr<ProcessGroup> world_;
  std::vector<MeshDim> dims_;
  std::vector<int64_t> coordinates_;
  std::vector<std::shared_ptr<ProcessGroup>> groups_;
};

}  // namespace olm::distributed
