#include "core/distributed/fsdp.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <deque>
#include <mutex>

#include "core/error.h"

namespace olm::distributed {

struct FsdpUnit {
  std::string name;
  std::vector<at::Tensor> params;  // share their TensorImpl with the module's parameters
  std::vector<std::string> names;
  std::vector<int64_t> offsets;
  int64_t numel = 0;
  int64_t padded = 0;
  int64_t shard_numel = 0;
  at::Tensor flat;        // the full buffer (param_dtype); its storage is empty while the unit is not gathered
  at::Tensor shard;       // this rank's elements [rank*S, (rank+1)*S), persistent (master precision)
  at::Tensor shard_grad;  // accumulated reduced gradients (undefined: none yet)
  std::vector<std::pair<at::Tensor*, std::pair<int64_t, int64_t>>> piece_grads;  // piece, [start, len) in shard
  size_t trainable = 0;
  size_t pending = 0;
  bool gathered = false;
  bool launched = false;
  bool root = false;
  at::Tensor reduced;  // the in-flight reduce-scatter's output
  std::unique_ptr<Pending> work;
  std::unique_ptr<Pending> gathering;  // an all-gather started ahead of use (prefetch)
  at::Tensor gather_input;             // its input (the shard cast to param_dtype), alive until done
};

struct FullyShardedDataParallel::State {
  std::recursive_mutex mutex;
  ProcessGroup* group = nullptr;
  ProcessGroup* replicate = nullptr;  // HSDP
  at::ScalarType reduce_dtype = at::kFloat;
  int64_t prefetch = 0;  // blocks gathered ahead of the one computing
  std::vector<FsdpUnit> units;
  std::vector<size_t> order;  // reduce-scatter order: blocks last to first, then root
  size_t next = 0;            // into `order`
  std::deque<at::Tensor> pieces;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<std::vector<bool>> ready;
  bool alive = true;
  int64_t gathered_bytes = 0;
  int64_t peak_gathered_bytes = 0;
  double last_wait_seconds = 0;

  static int64_t bytes(const FsdpUnit& u) { return u.padded * static_cast<int64_t>(u.flat.element_size()); }

  // Gives the unit's flat buffer its bytes back (free() resizes its storage to zero).
  static void allocate_flat(FsdpUnit& u) {
    auto* impl = u.flat.storage().unsafeGetStorageImpl();
    const size_t nbytes = static_cast<size_t>(bytes(u));
    impl->set_data_ptr_noswap(impl->allocator()->allocate(nbytes));
    impl->set_nbytes(nbytes);
  }

  // Allocates the unit's storage and starts its all-gather; gather() waits for it.
  void start_gather(size_t i) {
    auto& u = units[i];
    if (u.gathered) return;
    at::NoGradGuard no_grad;
    allocate_flat(u);
    u.gather_input = u.shard.to(u.flat.scalar_type());
    u.gathering = group->all_gather_into_async(u.flat, u.gather_input);
    u.gathered = true;
    gathered_bytes += bytes(u);
    peak_gathered_bytes = std::max(peak_gathered_bytes, gathered_bytes);
  }

  void gather(size_t i) {
    auto& u = units[i];
    start_gather(i);
    if (u.gathering) {
      auto pending = std::move(u.gathering);
      pending->wait();
      u.gather_input = at::Tensor();
    }
  }

  // Starts the all-gathers of the `prefetch` blocks after (step 1) or before (step -1) block
  // i, in that order on every rank (OLMo-core's prefetch_factor).
  void prefetch_from(size_t i, int step) {
    for (int64_t k = 1; k <= prefetch; ++k) {
      const int64_t j = static_cast<int64_t>(i) + step * k;
      if (j < 0 || j + 1 >= static_cast<int64_t>(units.size())) break;  // blocks only, not the root
      start_gather(static_cast<size_t>(j));
    }
  }

  void free(size_t i) {
    auto& u = units[i];
    if (!u.gathered) return;
    if (u.gathering) gather(i);  // never release memory a collective is writing
    u.flat.storage().unsafeGetStorageImpl()->reset();
    u.gathered = false;
    gathered_bytes -= bytes(u);
  }

  void launch(size_t i) {
    auto& u = units[i];
    u.launched = true;
    if (u.trainable == 0) return;
    at::NoGradGuard no_grad;
    auto full = at::zeros({u.padded}, u.shard.options().dtype(reduce_dtype));
    for (size_t k = 0; k < u.params.size(); ++k) {
      auto& p = u.params[k];
      if (!p.requires_grad()) continue;
      if (p.grad().defined()) full.narrow(0, u.offsets[k], p.numel()).copy_(p.grad().reshape(-1));
      p.mutable_grad().reset();
    }
    u.reduced = at::empty({u.shard_numel}, full.options());
    u.work = group->reduce_scatter_sum_async(u.reduced, full);
    if (!u.root) free(i);
  }

  void launch_ready() {
    while (next < order.size() && units[order[next]].pending == 0) launch(order[next++]);
  }

  void on_ready(size_t i, size_t k) {
    std::lock_guard<std::recursive_mutex> lock(mutex);
    if (!alive || ready[i][k]) return;
    ready[i][k] = true;
    --units[i].pending;
    launch_ready();
  }

  // Sets the parameters' data to views of `buffer` (one unit's flat layout).
  static void point_params_at(FsdpUnit& u, const at::Tensor& buffer) {
    for (size_t k = 0; k < u.params.size(); ++k) {
      auto& p = u.params[k];
      p.set_data(buffer.narrow(0, u.offsets[k], p.numel()).view(p.sizes()));
    }
  }

  // The parameters as views of the unit's flat buffer again; a freed buffer gets storage for
  // the moment of taking the views (views check their bounds), then is freed again.
  void point_params_at_flat(FsdpUnit& u) {
    if (u.gathered) return point_params_at(u, u.flat);
    allocate_flat(u);
    point_params_at(u, u.flat);
    u.flat.storage().unsafeGetStorageImpl()->reset();
  }

  // Every unit's full parameters in the shards' precision, one buffer per unit (collectives).
  std::vector<at::Tensor> gather_full_precision() {
    std::vector<at::Tensor> full;
    at::NoGradGuard no_grad;
    for (auto& u : units) {
      full.push_back(at::empty({u.padded}, u.shard.options()));
      group->all_gather_into_async(full.back(), u.shard)->wait();
    }
    return full;
  }

  // After each gradient accumulator fires, the unit may launch its reduction (as DDP's hooks).
  // A parameter whose dtype changes gets a new accumulator (Variable::set_data), so this runs
  // again after every such change.
  void install_hooks(const std::weak_ptr<State>& weak) {
    accumulators.clear();
    for (size_t i = 0; i < units.size(); ++i) {
      auto& u = units[i];
      for (size_t k = 0; k < u.params.size(); ++k) {
        auto& p = u.params[k];
        if (!p.requires_grad()) continue;
        auto acc = torch::autograd::impl::grad_accumulator(p);
        acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [weak, i, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
              if (auto st = weak.lock()) st->on_ready(i, k);
              return outputs;
            }));
        accumulators.push_back(std::move(acc));
      }
    }
  }

  void reset() {
    for (size_t i = 0; i < units.size(); ++i) {
      units[i].pending = units[i].trainable;
      units[i].launched = false;
      units[i].work.reset();
      units[i].reduced = at::Tensor();
      std::fill(ready[i].begin(), ready[i].end(), false);
    }
    next = 0;
  }
};

FullyShardedDataParallel::FullyShardedDataParallel(std::shared_ptr<ProcessGroup> group,
                                                   std::vector<FsdpUnitSpec> units, FsdpOptions options)
    : group_(std::move(group)), options_(std::move(options)), state_(std::make_shared<State>()) {
  require(group_ != nullptr, ErrorCode::kInvalidArgument, "process group: NULL");
  require(options_.reduce_dtype == at::kFloat || options_.reduce_dtype == at::kBFloat16, ErrorCode::kInvalidArgument,
          "FSDP reduce_dtype must be float32 or bfloat16");
  auto& s = *state_;
  s.group = group_.get();
  s.replicate = options_.replicate_group.get();
  s.reduce_dtype = options_.reduce_dtype;
  require(options_.prefetch >= 0, ErrorCode::kInvalidArgument, "FSDP prefetch must be >= 0");
  s.prefetch = options_.prefetch;
  const int64_t world = group_->world_size();
  const int64_t rank = group_->rank();
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < units.size(); ++i) {
    FsdpUnit u;
    u.name = units[i].name;
    u.root = i + 1 == units.size();
    require(!units[i].params.empty(), ErrorCode::kInvalidArgument, "FSDP unit " + u.name + " has no parameters");
    const auto options = units[i].params[0].tensor->options().requires_grad(false);
    require(!units[i].params[0].tensor->is_cuda() || group_->backend() == BackendKind::kNccl,
            ErrorCode::kInvalidArgument, "a CUDA parameter needs the nccl backend, not gloo");
    for (const auto& np : units[i].params) {
      const at::Tensor& p = *np.tensor;
      require(p.is_leaf() && p.scalar_type() == options.dtype().toScalarType() && p.device() == options.device(),
              ErrorCode::kInvalidArgument,
              "FSDP unit " + u.name + ": parameter " + np.name + " is not a leaf of the unit's dtype and device");
      u.params.push_back(p);
      u.names.push_back(np.name);
      u.offsets.push_back(u.numel);
      u.numel += p.numel();
      if (p.requires_grad()) ++u.trainable;
    }
    u.shard_numel = (u.numel + world - 1) / world;
    u.padded = u.shard_numel * world;
    // Rank 0's values everywhere (within the replica, then across replicas), then the
    // parameters become views of the flat buffer in param_dtype.
    auto master = at::zeros({u.padded}, options);
    for (size_t k = 0; k < u.params.size(); ++k)
      master.narrow(0, u.offsets[k], u.params[k].numel()).copy_(u.params[k].detach().reshape(-1));
    group_->broadcast({master}, 0);
    if (s.replicate) s.replicate->broadcast({master}, 0);
    u.shard = master.narrow(0, rank * u.shard_numel, u.shard_numel).clone();
    const auto compute = options_.param_dtype == at::ScalarType::Undefined ? options.dtype().toScalarType()
                                                                             : options_.param_dtype;
    u.flat = compute == options.dtype().toScalarType() ? master : master.to(compute);
    State::point_params_at(u, u.flat);
    u.gathered = true;
    s.units.push_back(std::move(u));
    s.gathered_bytes += State::bytes(s.units.back());
    s.free(s.units.size() - 1);
    s.ready.emplace_back(s.units.back().params.size(), false);
  }
  for (size_t i = s.units.size(); i-- > 1;) s.order.push_back(i - 1);
  if (!s.units.empty()) s.order.push_back(s.units.size() - 1);
  s.reset();
  s.peak_gathered_bytes = 0;
  // This rank's pieces.
  for (size_t i = 0; i < s.units.size(); ++i) {
    auto& u = s.units[i];
    const int64_t lo = rank * u.shard_numel, hi = lo + u.shard_numel;
    for (size_t k = 0; k < u.params.size(); ++k) {
      auto& p = u.params[k];
      const int64_t a = std::max(lo, u.offsets[k]), b = std::min(hi, u.offsets[k] + p.numel());
      if (a < b) {
        s.pieces.push_back(u.shard.narrow(0, a - lo, b - a));
        if (p.requires_grad()) {
          s.pieces.back().set_requires_grad(true);
          u.piece_grads.push_back({&s.pieces.back(), {a - lo, b - a}});
        }
      }
    }
  }
  s.install_hooks(state_);
}

FullyShardedDataParallel::~FullyShardedDataParallel() {
  std::lock_guard<std::recursive_mutex> lock(state_->mutex);
  state_->alive = false;
}

std::vector<nn::NamedParameter> FullyShardedDataParallel::shard_parameters() {
  std::vector<nn::NamedParameter> out;
  auto& s = *state_;
  size_t n = 0;
  const int64_t rank = group_->rank();
  for (auto& u : s.units) {
    const int64_t lo = rank * u.shard_numel, hi = lo + u.shard_numel;
    for (size_t k = 0; k < u.params.size(); ++k) {
      const int64_t a = std::max(lo, u.offsets[k]), b = std::min(hi, u.offsets[k] + u.params[k].numel());
      if (a < b) out.push_back({u.names[k], &s.pieces[n++]});
    }
  }
  return out;
}

std::vector<at::Tensor> FullyShardedDataParallel::shard_grads() {
  std::vector<at::Tensor> out;
  for (auto& u : state_->units)
    if (u.shard_grad.defined()) out.push_back(u.shard_grad);
  return out;
}

void FullyShardedDataParallel::zero_grad() {
  for (auto& u : state_->units) {
    u.shard_grad = at::Tensor();
    for (auto& [piece, range] : u.piece_grads) piece->mutable_grad().reset();
  }
}

void FullyShardedDataParallel::gather_before_backward(size_t index, const at::Tensor& t) {
  if (!t.requires_grad()) return;
  std::weak_ptr<State> weak = state_;
  t.register_hook([weak, index](const at::Tensor&) {
    if (auto st = weak.lock()) {
      std::lock_guard<std::recursive_mutex> lock(st->mutex);
      if (!st->alive) return;
      st->gather(index);
      st->prefetch_from(index, -1);  // backward runs the blocks last to first
    }
  });
}

at::Tensor FullyShardedDataParallel::run_block(size_t index, const std::function<at::Tensor()>& forward) {
  auto& s = *state_;
  require(index + 1 < s.units.size(), ErrorCode::kInternal, "FSDP: block unit out of range");
  {
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    s.gather(index);
    s.prefetch_from(index, 1);
  }
  at::Tensor y = forward();
  {
    std::lock_guard<std::recursive_mutex> lock(s.mutex);
    s.free(index);
  }
  gather_before_backward(index, y);  // the block's backward needs its parameters again
  return y;
}

void FullyShardedDataParallel::gather_root() {
  std::lock_guard<std::recursive_mutex> lock(state_->mutex);
  state_->gather(state_->units.size() - 1);
}

void FullyShardedDataParallel::free_root() {
  std::lock_guard<std::recursive_mutex> lock(state_->mutex);
  state_->free(state_->units.size() - 1);
}

void FullyShardedDataParallel::finish_backward() {
  auto& s = *state_;
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  const auto t0 = std::chrono::steady_clock::now();
  struct Reset {
    State& s;
    ~Reset() { s.reset(); }
  } reset{s};
  for (auto& u : s.units) u.pending = 0;
  s.launch_ready();
  at::NoGradGuard no_grad;
  for (size_t i : s.order) {
    auto& u = s.units[i];
    if (!u.work) continue;
    u.work->wait();
    if (s.replicate) s.replicate->all_reduce_sum({u.reduced});
    if (u.shard_grad.defined())
      u.shard_grad.add_(u.reduced);
    else
      u.shard_grad = u.reduced.to(u.shard.scalar_type());
    for (auto& [piece, range] : u.piece_grads) piece->mutable_grad() = u.shard_grad.narrow(0, range.first, range.second);
  }
  s.last_wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void FullyShardedDataParallel::gather_all() {
  std::lock_guard<std::recursive_mutex> lock(state_->mutex);
  for (size_t i = 0; i < state_->units.size(); ++i) state_->gather(i);
}

void FullyShardedDataParallel::free_all() {
  std::lock_guard<std::recursive_mutex> lock(state_->mutex);
  for (size_t i = 0; i < state_->units.size(); ++i) state_->free(i);
}

void FullyShardedDataParallel::update_full_precision(const std::function<void()>& update) {
  auto& s = *state_;
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  for (size_t i = 0; i < s.units.size(); ++i) s.free(i);
  auto full = s.gather_full_precision();
  bool retyped = false;
  for (size_t i = 0; i < s.units.size(); ++i) {
    State::point_params_at(s.units[i], full[i]);
    retyped = retyped || full[i].scalar_type() != s.units[i].flat.scalar_type();
  }
  struct Restore {  // the flat (param_dtype) views again, also when `update` throws
    State& s;
    std::shared_ptr<State> self;
    bool retyped;
    ~Restore() {
      for (auto& u : s.units) s.point_params_at_flat(u);
      if (retyped) s.install_hooks(self);
    }
  } restore{s, state_, retyped};
  update();
  at::NoGradGuard no_grad;
  const int64_t rank = group_->rank();
  for (size_t i = 0; i < s.units.size(); ++i) {
    auto& u = s.units[i];
    u.shard.copy_(full[i].narrow(0, rank * u.shard_numel, u.shard_numel));
  }
}

void FullyShardedDataParallel::release_full_precision() {
  auto& s = *state_;
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  for (size_t i = 0; i < s.units.size(); ++i) s.free(i);
  auto full = s.gather_full_precision();
  for (size_t i = 0; i < s.units.size(); ++i) State::point_params_at(s.units[i], full[i]);
  s.alive = false;  // the hooks do nothing from now on
}

size_t FullyShardedDataParallel::num_units() const { return state_->units.size(); }

FsdpMemory FullyShardedDataParallel::memory() const {
  FsdpMemory m;
  for (const auto& u : state_->units) {
    m.shard_bytes += u.shard_numel * static_cast<int64_t>(u.shard.element_size());
    m.unsharded_bytes += u.numel * static_cast<int64_t>(u.shard.element_size());
  }
  m.gathered_bytes = state_->gathered_bytes;
  m.peak_gathered_bytes = state_->peak_gathered_bytes;
  return m;
}

void FullyShardedDataParallel::reset_peak() { state_->peak_gathered_bytes = state_->gathered_bytes; }
double FullyShardedDataParallel::last_wait_seconds() const { return state_->last_wait_seconds; }

std::vector<FullyShardedDataParallel::Piece> FullyShardedDataParallel::pieces_of_rank(int64_t rank) const {
  require(rank >= 0 && rank < group_->world_size(), ErrorCode::kInvalidArgument,
          "rank " + std::to_string(rank) + " is outside the process group of " +
              std::to_string(group_->world_size()));
  // The same walk as the constructor's and shard_parameters()'s, for any rank.
  std::vector<Piece> out;
  for (const auto& u : state_->units) {
    const int64_t lo = rank * u.shard_numel, hi = lo + u.shard_numel;
    for (size_t k = 0; k < u.params.size(); ++k) {
      const int64_t a = std::max(lo, u.offsets[k]), b = std::min(hi, u.offsets[k] + u.params[k].numel());
      if (a < b)
        out.push_back({u.names[k], a - u.offsets[k], b - a, u.params[k].sizes().vec(), u.params[k].requires_grad()});
    }
  }
  return out;
}

void FullyShardedDataParallel::load_shard(const std::map<std::string, at::Tensor>& pieces) {
  auto& s = *state_;
  std::lock_guard<std::recursive_mutex> lock(s.mutex);
  const int64_t rank = group_->rank();
  // Every piece checked before any is written.
  std::vector<std::pair<at::Tensor, const at::Tensor*>> copies;
  for (auto& u : s.units) {
    const int64_t lo = rank * u.shard_numel, hi = lo + u.shard_numel;
    for (size_t k = 0; k < u.params.size(); ++k) {
      const int64_t a = std::max(lo, u.offsets[k]), b = std::min(hi, u.offsets[k] + u.params[k].numel());
      if (a >= b) continue;
      auto it = pieces.find(u.names[k]);
      require(it != pieces.end(), ErrorCode::kMismatch, "FSDP shard: no values for parameter '" + u.names[k] + "'");
      require(it->second.numel() == b - a, ErrorCode::kMismatch,
              "FSDP shard: parameter '" + u.names[k] + "': " + std::to_string(it->second.numel()) +
                  " values for a piece of " + std::to_string(b - a) + " elements");
      copies.emplace_back(u.shard.narrow(0, a - lo, b - a), &it->second);
    }
  }
  at::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src->reshape({-1}));
  for (size_t i = 0; i < s.units.size(); ++i) s.free(i);
}

}  // namespace olm::distributed
