#include "core/distributed/process_group.h"

// libtorch_cpu.so carries c10d's Gloo backend; its header needs gloo's own headers
// (Debian's libgloo-dev: only pointer types of gloo cross into what we use).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <arpa/inet.h>
#include <cstdio>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/device.h"
#include "core/error.h"

namespace olm::distributed {
#ifdef OLM_WITH_NCCL
// core/distributed/nccl.cpp, which alone includes the CUDA-dependent header.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int world_size, std::chrono::milliseconds timeout);
#endif

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  require(end && *end == '\0' && x >= 0, ErrorCode::kInvalidArgument,
          std::string("environment variable ") + name + "='" + v + "' is not a non-negative integer");
  return x;
}

// SLURM_NTASKS_PER_NODE may read "4" or "4(x2)".
int64_t slurm_tasks_per_node(int64_t fallback) {
  const char* v = env("SLURM_NTASKS_PER_NODE");
  if (!v) return fallback;
  const long long x = std::strtoll(v, nullptr, 10);
  return x > 0 ? x : fallback;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

std::string ms_text(std::chrono::milliseconds t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(t.count()) / 1000.0);
  return buf;
}

std::string rank_list(const std::vector<int64_t>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return (ranks.size() == 1 ? "rank " : "ranks ") + s;
}

// An exception's message on one line: c10's "Exception raised from ..." context and stack
// frames (which wrapped c10d errors carry inside their message) are dropped, and the lines
// left are joined with "; ".
std::string one_line(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10 ? c10->what_without_backtrace() : e.what();
  const size_t raised = text.find("Exception raised from");
  if (raised != std::string::npos) text.erase(raised);
  std::string out, line;
  auto flush = [&] {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '\t')) line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b != std::string::npos && line.compare(b, 6, "frame ") != 0) out += (out.empty() ? "" : "; ") + line.substr(b);
    line.clear();
  };
  for (char c : text) {
    if (c == '\n')
      flush();
    else
      line += c;
  }
  flush();
  return out;
}

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds until(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
}

// The longest single connection attempt while waiting for the store's port: the wait ends at
// most this long after its deadline.
constexpr std::chrono::milliseconds kConnectAttempt{100};

// Waits until something accepts TCP connections on addr:port, with attempts of at most
// kConnectAttempt, until `deadline`. False when nothing did.
bool wait_for_port(const std::string& addr, int port, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  for (;;) {
    addrinfo* found = nullptr;
    if (getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &found) == 0) {
      for (addrinfo* a = found; a; a = a->ai_next) {
        const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        bool ok = false;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          ok = true;
        } else if (errno == EINPROGRESS) {
          const auto wait = std::max<std::chrono::milliseconds>(
              std::chrono::milliseconds(1), std::min(kConnectAttempt, until(deadline)));
          pollfd p{fd, POLLOUT, 0};
          if (poll(&p, 1, static_cast<int>(wait.count())) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
          }
        }
        close(fd);
        if (ok) {
          freeaddrinfo(found);
          return true;
        }
      }
      freeaddrinfo(found);
    }
    const auto left = until(deadline);
    if (left.count() <= 0) return false;
    std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(50)));
  }
}

bool valid_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0) return false;
  const std::string index = d.substr(5);
  if (index.empty() || index.size() > 4) return false;
  for (char c : index)
    if (c < '0' || c > '9') return false;
  return true;
}

// The caller's string for a message: control bytes escaped, at most 64 bytes shown.
std::string shown(const std::string& text) {
  std::string out;
  for (unsigned char c : text.substr(0, 64)) {
    if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return "'" + out + (text.size() > 64 ? "...'" : "'");
}

// The values a caller set (C++, the C options or the command line), before the environment
// fills the -1 / empty / 0 ones: each field is checked here once, by its name.
void check_given(const ProcessGroupOptions& o) {
  const std::string max_world = std::to_string(kMaxWorldSize);
  require(o.backend == BackendKind::kAuto || o.backend == BackendKind::kGloo || o.backend == BackendKind::kNccl,
          ErrorCode::kInvalidArgument,
          "options.backend: " + std::to_string(static_cast<int>(o.backend)) + " is not auto (0), gloo (1) or nccl (2)");
  require(valid_device(o.device), ErrorCode::kInvalidArgument,
          "options.device: " + shown(o.device) + " is not \"cpu\", \"cuda\" or \"cuda:N\"");
  require(o.rank >= -1 && o.rank < kMaxWorldSize, ErrorCode::kInvalidArgument,
          "options.rank: " + std::to_string(o.rank) + " is neither -1 nor a rank in [0, " + max_world + ")");
  require(o.world_size == -1 || (o.world_size >= 1 && o.world_size <= kMaxWorldSize), ErrorCode::kInvalidArgument,
          "options.world_size: " + std::to_string(o.world_size) + " is neither -1 nor in [1, " + max_world + "]");
  require(o.rank == -1 || o.world_size == -1 || o.rank < o.world_size, ErrorCode::kInvalidArgument,
          "options.rank: rank " + std::to_string(o.rank) + " is outside [0, world_size=" +
              std::to_string(o.world_size) + ")");
  require(o.local_rank >= -1 && o.local_rank < kMaxWorldSize, ErrorCode::kInvalidArgument,
          "options.local_rank: " + std::to_string(o.local_rank) + " is neither -1 nor a rank in [0, " + max_world +
              ")");
  require(o.local_world_size == -1 || (o.local_world_size >= 1 && o.local_world_size <= kMaxWorldSize),
          ErrorCode::kInvalidArgument,
          "options.local_world_size: " + std::to_string(o.local_world_size) + " is neither -1 nor in [1, " +
              max_world + "]");
  require(o.local_rank == -1 || o.local_world_size == -1 || o.local_rank < o.local_world_size,
          ErrorCode::kInvalidArgument,
          "options.local_rank: local rank " + std::to_string(o.local_rank) + " is outside [0, local_world_size=" +
              std::to_string(o.local_world_size) + ")");
  require(o.master_port >= 0 && o.master_port < 65536, ErrorCode::kInvalidArgument,
          "options.master_port: " + std::to_string(o.master_port) + " is outside [0, 65535]");
  require(o.timeout.count() > 0, ErrorCode::kInvalidArgument, "options.timeout: must be positive");
}

}  // namespace

bool launched_distributed() {
  return env_int("WORLD_SIZE", 1) > 1 || (!env("WORLD_SIZE") && env_int("SLURM_NTASKS", 1) > 1);
}

ProcessGroupOptions resolve_options(ProcessGroupOptions o) {
  check_given(o);
  const bool torchrun = env("WORLD_SIZE") != nullptr;
  const bool slurm = !torchrun && env("SLURM_NTASKS") != nullptr;
  if (o.world_size < 0) o.world_size = torchrun ? env_int("WORLD_SIZE", 1) : slurm ? env_int("SLURM_NTASKS", 1) : 1;
  if (o.rank < 0) o.rank = torchrun ? env_int("RANK", 0) : slurm ? env_int("SLURM_PROCID", 0) : 0;
  if (o.local_rank < 0) o.local_rank = torchrun ? env_int("LOCAL_RANK", o.rank) : slurm ? env_int("SLURM_LOCALID", o.rank) : o.rank;
  if (o.local_world_size < 0)
    o.local_world_size = torchrun ? env_int("LOCAL_WORLD_SIZE", o.world_size)
                                  : slurm ? slurm_tasks_per_node(o.world_size) : o.world_size;
  if (o.master_addr.empty()) {
    // Slurm names no rendezvous host; on one node the loopback is right, across nodes only
    // the user knows which address every node can reach.
    require(env("MASTER_ADDR") || !slurm || o.world_size <= o.local_world_size, ErrorCode::kInvalidArgument,
            "MASTER_ADDR is not set and this Slurm job spans several nodes: export MASTER_ADDR=$(scontrol show "
            "hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) (and MASTER_PORT) before srun");
    o.master_addr = env("MASTER_ADDR") ? env("MASTER_ADDR") : "127.0.0.1";
  }
  if (o.master_port == 0) o.master_port = static_cast<int>(env_int("MASTER_PORT", 29500));
  require(o.world_size >= 1 && o.world_size <= kMaxWorldSize, ErrorCode::kInvalidArgument,
          "world_size " + std::to_string(o.world_size) + " is outside [1, " + std::to_string(kMaxWorldSize) + "]");
  require(o.rank >= 0 && o.rank < o.world_size, ErrorCode::kInvalidArgument,
          "rank " + std::to_string(o.rank) + " is outside [0, world_size=" + std::to_string(o.world_size) + ")");
  require(o.local_rank >= 0 && o.local_world_size >= 1 && o.local_rank < o.local_world_size,
          ErrorCode::kInvalidArgument,
          "local_rank " + std::to_string(o.local_rank) + " is outside [0, local_world_size=" +
              std::to_string(o.local_world_size) + ")");
  require(o.master_port > 0 && o.master_port < 65536, ErrorCode::kInvalidArgument,
          "master_port " + std::to_string(o.master_port) + " is outside [1, 65535]");
  if (o.backend == BackendKind::kAuto)
    o.backend = o.device.rfind("cuda", 0) == 0 ? BackendKind::kNccl : BackendKind::kGloo;
  return o;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;  // prefixed "olm/"
  c10::intrusive_ptr<c10d::Backend> backend;
  bool closed = false;

  static void count(ProcessGroup& g, int64_t bytes);
  template <typename Start>
  static std::unique_ptr<Pending> start(ProcessGroup& g, const std::string& what, Start&& start_work);
};

namespace {

class PendingWork : public Pending {
 public:
  PendingWork(ProcessGroup* group, c10::intrusive_ptr<c10d::Work> work, std::string what)
      : group_(group), work_(std::move(work)), what_(std::move(what)) {}
  void wait() override {
    if (!work_) return;
    auto work = std::move(work_);
    try {
      work->wait();
    } catch (const c10::Error& e) {
      group_->fail_collective(what_, one_line(e));
    } catch (const std::exception& e) {
      group_->fail_collective(what_, one_line(e));
    }
  }

 private:
  ProcessGroup* group_;
  c10::intrusive_ptr<c10d::Work> work_;
  std::string what_;
};

}  // namespace

ProcessGroup::ProcessGroup(ProcessGroupOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {}

ProcessGroup::~ProcessGroup() {
  try {
    if (impl_->backend) impl_->backend->shutdown();
  } catch (...) {
  }
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const ProcessGroupOptions& in) {
  auto o = resolve_options(in);
  std::shared_ptr<ProcessGroup> group(new ProcessGroup(o));
  group->backend_ = o.backend;
  group->mesh_ = {MeshDim{"dp", o.world_size}};
  const std::string where = o.master_addr + ":" + std::to_string(o.master_port);
  if (o.backend == BackendKind::kNccl) {
#ifdef OLM_WITH_NCCL
    require(cuda_device_count() > o.local_rank, ErrorCode::kDeviceUnavailable,
            "backend nccl: local rank " + std::to_string(o.local_rank) + " needs CUDA device " +
                std::to_string(o.local_rank) + ", and this process sees " + std::to_string(cuda_device_count()) +
                " (use gloo for CPU training)");
#else
    fail(ErrorCode::kDeviceUnavailable,
         "backend nccl: this build of olm has no NCCL process group; use gloo (CPU tensors)");
#endif
  }

  // Rendezvous, all of it within one deadline: reaching the store, and every rank's arrival.
  // torchrun's agent already hosts a store at MASTER_ADDR:MASTER_PORT and says so with
  // TORCHELASTIC_USE_AGENT_STORE; otherwise rank 0 hosts it.
  const auto deadline = Clock::now() + o.timeout;
  const char* agent = env("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_store = agent && std::string(agent) == "True";
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(o.master_port);
  so.isServer = !agent_store && o.rank == 0;
  so.numWorkers = std::nullopt;  // arrival is checked below, so we can name the missing
  so.waitWorkers = false;
  const std::string unreachable = "rank " + std::to_string(o.rank) + " cannot reach the rendezvous store at " + where +
                                  (agent_store ? "" : " (hosted by rank 0, which never arrived)") + " within " +
                                  ms_text(o.timeout);
  // A client waits for the port itself, in short attempts, rather than in c10d's connect
  // loop, whose random back-off overshoots the timeout by tens of seconds.
  if (!so.isServer && !wait_for_port(o.master_addr, o.master_port, deadline))
    fail(ErrorCode::kDistributed, unreachable);
  so.timeout = std::max(until(deadline), kConnectAttempt);
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (const std::exception& e) {
    fail(ErrorCode::kDistributed, so.isServer ? "rank 0 cannot host the rendezvous store on " + where + ": " + one_line(e)
                                              : unreachable + ": " + one_line(e));
  }
  // One namespace per run and group: torchrun's agent store outlives restarts, and a process
  // may create several groups in turn (every rank creates them in the same order).
  static std::atomic<int64_t> groups_created{0};
  const std::string run = env("TORCHELASTIC_RESTART_COUNT") ? env("TORCHELASTIC_RESTART_COUNT") : "0";
  group->impl_->store =
      c10::make_intrusive<c10d::PrefixStore>("olm/" + run + "/" + std::to_string(groups_created++), tcp);
  auto& store = group->impl_->store;
  // Arrival: one counter, polled (one round trip a poll, whatever the world size); the ranks
  // that arrived are also appended to one list, read once to name the missing on a timeout.
  try {
    const std::string me = std::to_string(o.rank) + ",";
    store->append("arrived_ranks", std::vector<uint8_t>(me.begin(), me.end()));
    int64_t arrived = store->add("arrived", 1);
    while (arrived < o.world_size) {
      const auto left = until(deadline);
      if (left.count() <= 0) {
        const auto list = store->get("arrived_ranks");
        std::vector<bool> here(static_cast<size_t>(o.world_size), false);
        int64_t r = 0;
        bool digits = false;
        for (uint8_t c : list) {
          if (c >= '0' && c <= '9') {
            r = r * 10 + (c - '0');
            digits = true;
          } else {
            if (digits && r < o.world_size) here[static_cast<size_t>(r)] = true;
            r = 0;
            digits = false;
          }
        }
        std::vector<int64_t> missing;
        int64_t more = 0;
        for (int64_t m = 0; m < o.world_size; ++m) {
          if (here[static_cast<size_t>(m)]) continue;
          if (missing.size() < 16)
            missing.push_back(m);
          else
            ++more;
        }
        fail(ErrorCode::kDistributed, rank_list(missing) + (more ? " and " + std::to_string(more) + " more" : "") +
                                          " of world_size " + std::to_string(o.world_size) + " never arrived at " +
                                          where + " within " + ms_text(o.timeout));
      }
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(20)));
      arrived = store->add("arrived", 0);
    }
  } catch (const olm::Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(ErrorCode::kDistributed, "rank " + std::to_string(o.rank) + ": the rendezvous at " + where +
                                      " failed (its host, rank 0, is gone?): " + one_line(e));
  }
  // Later store operations (the backend's connection, failure reports) get the full timeout.
  tcp->setTimeout(o.timeout);

  group->connect_backend();
  return group;
}

void ProcessGroup::connect_backend() {
  const ProcessGroupOptions& o = options_;
  const auto& store = impl_->store;
#ifdef OLM_WITH_NCCL
  if (o.backend == BackendKind::kNccl) {
    try {
      impl_->backend = make_nccl_backend(c10::make_intrusive<c10d::PrefixStore>("nccl", store),
                                         static_cast<int>(o.rank), static_cast<int>(o.world_size), o.timeout);
    } catch (const c10::Error& e) {
      fail_collective("connecting the nccl backend", one_line(e));
    }
    return;
  }
#endif
  auto gloo_options = c10d::ProcessGroupGloo::Options::create_default(o.timeout);
  const char* ifname = env("GLOO_SOCKET_IFNAME");
  if (ifname)
    gloo_options->devices = {c10d::ProcessGroupGloo::createDeviceForInterface(ifname)};
  else if (is_loopback(o.master_addr))
    gloo_options->devices = {c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")};
  else
    gloo_options->devices = {c10d::ProcessGroupGloo::createDefaultDevice()};
  gloo_options->threads = 2;
  try {
    impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", store),
                                                                 static_cast<int>(o.rank),
                                                                 static_cast<int>(o.world_size), gloo_options);
  } catch (const c10::Error& e) {
    fail_collective("connecting the gloo backend", one_line(e));
  }
}

std::shared_ptr<ProcessGroup> ProcessGroup::new_subgroup(const std::string& name, const std::vector<int64_t>& ranks) {
  require(impl_->backend && !impl_->closed, ErrorCode::kDistributed, "the process group is shut down");
  int64_t mine = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    require(ranks[i] >= 0 && ranks[i] < world_size(), ErrorCode::kInvalidArgument,
            "sub-group " + name + ": rank " + std::to_string(ranks[i]) + " is outside [0, world_size=" +
                std::to_string(world_size()) + ")");
    for (size_t j = 0; j < i; ++j)
      require(ranks[j] != ranks[i], ErrorCode::kInvalidArgument,
              "sub-group " + name + ": rank " + std::to_string(ranks[i]) + " is listed twice");
    if (ranks[i] == rank()) mine = static_cast<int64_t>(i);
  }
  require(mine >= 0, ErrorCode::kInvalidArgument,
          "sub-group " + name + ": rank " + std::to_string(rank()) + " is not one of its members");
  ProcessGroupOptions o = options_;
  o.rank = mine;
  o.world_size = static_cast<int64_t>(ranks.size());
  std::shared_ptr<ProcessGroup> sub(new ProcessGroup(o));
  sub->backend_ = backend_;
  const auto slash = name.find('/');
  sub->mesh_ = {MeshDim{name.substr(0, slash), o.world_size}};
  for (int64_t r : ranks) sub->parent_ranks_.push_back(parent_ranks_.empty() ? r : parent_ranks_[r]);
  sub->impl_->store = c10::make_intrusive<c10d::PrefixStore>("sub/" + name, impl_->store);
  sub->connect_backend();
  return sub;
}

DeviceMesh DeviceMesh::build(const std::shared_ptr<ProcessGroup>& world, const std::vector<MeshDim>& dims) {
  require(world != nullptr, ErrorCode::kInvalidArgument, "device mesh: the world group is NULL");
  require(!dims.empty(), ErrorCode::kInvalidArgument, "device mesh: no dimensions");
  int64_t product = 1;
  std::string shape;
  for (size_t d = 0; d < dims.size(); ++d) {
    require(dims[d].size >= 1, ErrorCode::kInvalidConfig,
            "device mesh: dimension " + dims[d].name + " has size " + std::to_string(dims[d].size));
    for (size_t e = 0; e < d; ++e)
      require(dims[e].name != dims[d].name, ErrorCode::kInvalidArgument,
              "device mesh: dimension " + dims[d].name + " is named twice");
    product *= dims[d].size;
    shape += (d ? " x " : "") + dims[d].name + " (" + std::to_string(dims[d].size) + ")";
  }
  require(product == world->world_size(), ErrorCode::kInvalidConfig,
          "device mesh: " + shape + " is " + std::to_string(product) + " ranks, not world_size " +
              std::to_string(world->world_size()));
  DeviceMesh mesh;
  mesh.world_ = world;
  mesh.dims_ = dims;
  // Row-major coordinates of this rank, and the stride of each dimension.
  std::vector<int64_t> stride(dims.size(), 1);
  for (size_t d = dims.size() - 1; d-- > 0;) stride[d] = stride[d + 1] * dims[d + 1].size;
  for (size_t d = 0; d < dims.size(); ++d) mesh.coordinates_.push_back(world->rank() / stride[d] % dims[d].size);
  for (size_t d = 0; d < dims.size(); ++d) {
    // The ranks differing from this one in dimension d only; named by where the line starts.
    const int64_t first = world->rank() - mesh.coordinates_[d] * stride[d];
    std::vector<int64_t> ranks;
    for (int64_t k = 0; k < dims[d].size; ++k) ranks.push_back(first + k * stride[d]);
    mesh.groups_.push_back(world->new_subgroup(dims[d].name + "/" + std::to_string(first), ranks));
  }
  return mesh;
}

std::shared_ptr<ProcessGroup> DeviceMesh::flatten(const std::vector<std::string>& names, const std::string& name) {
  std::vector<bool> flattened(dims_.size(), false);
  for (const auto& n : names) flattened[index(n)] = true;
  std::vector<int64_t> stride(dims_.size(), 1);
  for (size_t d = dims_.size() - 1; d-- > 0;) stride[d] = stride[d + 1] * dims_[d + 1].size;
  std::vector<int64_t> ranks;
  for (int64_t r = 0; r < world_->world_size(); ++r) {
    bool same = true;
    for (size_t d = 0; d < dims_.size() && same; ++d)
      same = flattened[d] || r / stride[d] % dims_[d].size == coordinates_[d];
    if (same) ranks.push_back(r);
  }
  groups_.push_back(world_->new_subgroup(name + "/" + std::to_string(ranks.front()), ranks));
  return groups_.back();
}

size_t DeviceMesh::index(const std::string& name) const {
  std::string known;
  for (size_t d = 0; d < dims_.size(); ++d) {
    if (dims_[d].name == name) return d;
    known += (d ? ", " : "") + dims_[d].name;
  }
  fail(ErrorCode::kInvalidArgument, "device mesh: no dimension " + name + " (it has " + known + ")");
}

int64_t DeviceMesh::coordinate(const std::string& name) const { return coordinates_[index(name)]; }
const std::shared_ptr<ProcessGroup>& DeviceMesh::group(const std::string& name) const { return groups_[index(name)]; }

void ProcessGroup::fail_collective(const std::string& what, const std::string& cause) {
  // Who is gone? Every survivor checks in under a fresh key; whoever does not within a short
  // grace period is reported. A dead rank 0 takes the store with it (unless torchrun hosts it).
  std::string who;
  try {
    auto& store = impl_->store;
    const int64_t epoch = store->add("failures/" + std::to_string(rank()), 1);
    const std::string prefix = "alive/" + std::to_string(epoch) + "/";
    store->set(prefix + std::to_string(rank()), std::vector<uint8_t>{1});
    const auto grace = std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::seconds(3));
    const auto deadline = std::chrono::steady_clock::now() + grace;
    std::vector<int64_t> missing;
    do {
      missing.clear();
      for (int64_t r = 0; r < world_size(); ++r)
        if (!store->check({prefix + std::to_string(r)}))
          missing.push_back(parent_ranks_.empty() ? r : parent_ranks_[static_cast<size_t>(r)]);
      if (missing.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (std::chrono::steady_clock::now() < deadline);
    if (!missing.empty()) who = rank_list(missing) + " stopped responding (died or left the group); ";
  } catch (...) {
    who = "the rendezvous store is unreachable, so rank 0 (its host) is gone; ";
  }
  const std::string me = parent_ranks_.empty() ? "rank " + std::to_string(rank())
                                               : "rank " + std::to_string(parent_ranks_[static_cast<size_t>(rank())]) +
                                                     " (in " + mesh_[0].name + " sub-group)";
  fail(ErrorCode::kDistributed, me + ": " + what + " failed: " + who + cause);
}

// Every collective: refused on a closed group, counted, then started; a start that throws (a
// peer already gone) is named as a failure of `what`, like a failed wait.
void ProcessGroup::Impl::count(ProcessGroup& g, int64_t bytes) {
  require(g.impl_->backend && !g.impl_->closed, ErrorCode::kDistributed, "the process group is shut down");
  g.stats_.bytes += bytes;
  ++g.stats_.collectives;
}

template <typename Start>
std::unique_ptr<Pending> ProcessGroup::Impl::start(ProcessGroup& g, const std::string& what, Start&& start_work) {
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = start_work();
  } catch (const c10::Error& e) {
    g.fail_collective(what, one_line(e));
  }
  return std::make_unique<PendingWork>(&g, std::move(work), what);
}

std::unique_ptr<Pending> ProcessGroup::all_reduce_sum_async(std::vector<at::Tensor> tensors) {
  int64_t bytes = 0;
  for (const auto& t : tensors) bytes += static_cast<int64_t>(t.numel() * t.element_size());
  Impl::count(*this, bytes);
  return Impl::start(*this, "all_reduce", [&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = options_.timeout;
    return impl_->backend->allreduce(tensors, opts);
  });
}

void ProcessGroup::broadcast(std::vector<at::Tensor> tensors, int64_t root) {
  int64_t bytes = 0;
  for (const auto& t : tensors) bytes += static_cast<int64_t>(t.numel() * t.element_size());
  Impl::count(*this, bytes);
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = options_.timeout;
  // c10d's tensor list means one tensor per device (all the same size); several tensors of
  // one device, as DDP's buckets, go one collective each.
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    Impl::start(*this, "broadcast", [&] { return impl_->backend->broadcast(one, opts); })->wait();
  }
}

std::unique_ptr<Pending> ProcessGroup::all_gather_into_async(at::Tensor output, at::Tensor input) {
  require(output.is_contiguous() && input.is_contiguous() && output.numel() == input.numel() * world_size() &&
              output.scalar_type() == input.scalar_type(),
          ErrorCode::kInvalidArgument, "all_gather: output must hold world_size times input's elements");
  Impl::count(*this, static_cast<int64_t>(output.numel() * output.element_size()));
  return Impl::start(*this, "all_gather", [&] {
    c10d::AllgatherOptions opts;
    opts.timeout = options_.timeout;
    return impl_->backend->_allgather_base(output, input, opts);
  });
}

std::unique_ptr<Pending> ProcessGroup::reduce_scatter_sum_async(at::Tensor output, at::Tensor input) {
  require(output.is_contiguous() && input.is_contiguous() && input.numel() == output.numel() * world_size() &&
              output.scalar_type() == input.scalar_type(),
          ErrorCode::kInvalidArgument, "reduce_scatter: input must hold world_size times output's elements");
  Impl::count(*this, static_cast<int64_t>(input.numel() * input.element_size()));
  return Impl::start(*this, "reduce_scatter", [&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = options_.timeout;
    return impl_->backend->_reduce_scatter_base(output, input, opts);
  });
}

std::string ProcessGroup::peer_name(int64_t peer) const {
  return "rank " + std::to_string(parent_ranks_.empty() ? peer : parent_ranks_[static_cast<size_t>(peer)]);
}

void ProcessGroup::check_peer(const at::Tensor& tensor, int64_t peer, const char* op) const {
  require(peer >= 0 && peer < world_size() && peer != rank(), ErrorCode::kInvalidArgument,
          std::string(op) + ": peer " + std::to_string(peer) + " is not another rank of this group (rank " +
              std::to_string(rank()) + " of world_size " + std::to_string(world_size()) + ")");
  require(tensor.defined() && tensor.is_contiguous(), ErrorCode::kInvalidArgument,
          std::string(op) + ": the tensor must be defined and contiguous");
}

std::unique_ptr<Pending> ProcessGroup::send_async(at::Tensor tensor, int64_t peer, int64_t tag) {
  check_peer(tensor, peer, "send");
  Impl::count(*this, static_cast<int64_t>(tensor.numel() * tensor.element_size()));
  return Impl::start(*this, "send to " + peer_name(peer), [&] {
    std::vector<at::Tensor> one{tensor};
    return impl_->backend->send(one, static_cast<int>(peer), static_cast<int>(tag));
  });
}

std::unique_ptr<Pending> ProcessGroup::recv_async(at::Tensor tensor, int64_t peer, int64_t tag) {
  check_peer(tensor, peer, "recv");
  Impl::count(*this, 0);
  return Impl::start(*this, "recv from " + peer_name(peer), [&] {
    std::vector<at::Tensor> one{tensor};
    return impl_->backend->recv(one, static_cast<int>(peer), static_cast<int>(tag));
  });
}

std::unique_ptr<Pending> ProcessGroup::all_to_all_async(at::Tensor output, at::Tensor input) {
  require(output.defined() && input.defined() && output.is_contiguous() && input.is_contiguous() &&
              output.sizes() == input.sizes() && output.scalar_type() == input.scalar_type() && input.dim() >= 1 &&
              input.size(0) % world_size() == 0,
          ErrorCode::kInvalidArgument,
          "all_to_all: input and output must be contiguous, of one shape and dtype, dim 0 a multiple of world_size " +
              std::to_string(world_size()));
  const int64_t bytes = static_cast<int64_t>(input.numel() * input.element_size());
  Impl::count(*this, bytes - bytes / world_size());
  return Impl::start(*this, "all_to_all", [&] {
    std::vector<int64_t> equal_splits;  // empty: world_size equal slices
    c10d::AllToAllOptions opts;
    opts.timeout = options_.timeout;
    return impl_->backend->alltoall_base(output, input, equal_splits, equal_splits, opts);
  });
}

void ProcessGroup::barrier() {
  Impl::count(*this, 0);
  Impl::start(*this, "barrier", [&] {
    c10d::BarrierOptions opts;
    opts.timeout = options_.timeout;
    return impl_->backend->barrier(opts);
  })->wait();
}

void ProcessGroup::shutdown() {
  if (impl_->closed) return;
  barrier();
  impl_->closed = true;
  impl_->backend->shutdown();
}

}  // namespace olm::distributed
