#include "core/distributed/ddp.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <mutex>

#include "core/error.h"

namespace olm::distributed {

struct Bucket {
  std::vector<size_t> params;   // indices into State::params
  std::vector<int64_t> offsets; // element offsets into `flat`
  at::Tensor flat;
  size_t pending = 0;           // parameters not yet ready this step
  bool launched = false;
  std::unique_ptr<Pending> work;
};

struct DataParallel::State {
  std::mutex mutex;
  ProcessGroup* group = nullptr;
  std::vector<at::Tensor> params;
  std::vector<size_t> bucket_of;
  std::vector<bool> ready;
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  size_t next_bucket = 0;
  bool sync = false;
  bool alive = true;
  double last_wait_seconds = 0;
  size_t last_launched_in_backward = 0;

  void copy_in(Bucket& b) {
    for (size_t k = 0; k < b.params.size(); ++k) {
      const auto& p = params[b.params[k]];
      auto view = b.flat.narrow(0, b.offsets[k], p.numel());
      const auto& g = p.grad();
      if (g.defined())
        view.copy_(g.reshape(-1));
      else
        view.zero_();
    }
  }

  void launch_ready() {
    while (next_bucket < buckets.size() && buckets[next_bucket].pending == 0) {
      auto& b = buckets[next_bucket++];
      copy_in(b);
      b.launched = true;
      b.work = group->all_reduce_sum_async({b.flat});
    }
  }

  void on_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!alive || !sync || ready[i]) return;
    ready[i] = true;
    --buckets[bucket_of[i]].pending;
    launch_ready();
  }

  void reset() {
    for (auto& b : buckets) {
      b.pending = b.params.size();
      b.launched = false;
      b.work.reset();
    }
    std::fill(ready.begin(), ready.end(), false);
    next_bucket = 0;
  }
};

DataParallel::DataParallel(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                           int64_t bucket_bytes)
    : group_(std::move(group)), state_(std::make_shared<State>()) {
  require(group_ != nullptr, ErrorCode::kInvalidArgument, "process group: NULL");
  require(bucket_bytes > 0, ErrorCode::kInvalidArgument, "bucket_bytes must be positive");
  auto& s = *state_;
  s.group = group_.get();
  s.params = std::move(params);
  s.bucket_of.assign(s.params.size(), 0);
  s.ready.assign(s.params.size(), false);
  // Buckets over the reversed parameter list, one dtype per bucket.
  Bucket current;
  int64_t bytes = 0, elements = 0;
  at::ScalarType dtype = at::kFloat;
  auto close = [&]() {
    if (current.params.empty()) return;
    current.flat = at::zeros({elements}, s.params[current.params[0]].options().requires_grad(false));
    s.buckets.push_back(std::move(current));
    current = Bucket();
    bytes = elements = 0;
  };
  for (size_t n = s.params.size(); n-- > 0;) {
    const auto& p = s.params[n];
    require(p.requires_grad() && p.is_leaf(), ErrorCode::kInvalidArgument,
            "parameter " + std::to_string(n) + " is not a trainable leaf tensor");
    require(!p.is_cuda() || group_->backend() == BackendKind::kNccl, ErrorCode::kInvalidArgument,
            "a CUDA parameter needs the nccl backend, not gloo");
    const int64_t pb = p.numel() * static_cast<int64_t>(p.element_size());
    if (!current.params.empty() && (p.scalar_type() != dtype || bytes + pb > bucket_bytes)) close();
    dtype = p.scalar_type();
    s.bucket_of[n] = s.buckets.size();
    current.params.push_back(n);
    current.offsets.push_back(elements);
    elements += p.numel();
    bytes += pb;
  }
  close();
  s.reset();
  // Hooks on the gradient accumulators (what the c10d Reducer does): they run right after a
  // parameter's gradient for this backward has been accumulated into .grad.
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [weak, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (auto st = weak.lock()) st->on_ready(i);
          return outputs;
        }));
    s.accumulators.push_back(std::move(acc));
  }
}

DataParallel::~DataParallel() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->alive = false;
}

size_t DataParallel::num_buckets() const { return state_->buckets.size(); }
double DataParallel::last_wait_seconds() const { return state_->last_wait_seconds; }
size_t DataParallel::last_buckets_launched_in_backward() const { return state_->last_launched_in_backward; }

void DataParallel::broadcast_parameters() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> flat;
  for (auto& b : state_->buckets) {
    for (size_t k = 0; k < b.params.size(); ++k)
      b.flat.narrow(0, b.offsets[k], state_->params[b.params[k]].numel())
          .copy_(state_->params[b.params[k]].detach().reshape(-1));
    flat.push_back(b.flat);
  }
  group_->broadcast(flat, 0);
  for (auto& b : state_->buckets)
    for (size_t k = 0; k < b.params.size(); ++k) {
      auto& p = state_->params[b.params[k]];
      p.detach().copy_(b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes()));
    }
}

void DataParallel::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->sync = sync;
}

void DataParallel::finish() {
  auto& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  const auto t0 = std::chrono::steady_clock::now();
  struct Reset {
    State& s;
    ~Reset() {
      s.reset();
      s.sync = false;
    }
  } reset{s};
  s.last_launched_in_backward = s.next_bucket;
  // Parameters backward never reached (unused this step) are zeros, as in DDP.
  for (auto& b : s.buckets) b.pending = 0;
  s.launch_ready();
  at::NoGradGuard no_grad;
  for (auto& b : s.buckets) {
    b.work->wait();
    for (size_t k = 0; k < b.params.size(); ++k) {
      auto& p = s.params[b.params[k]];
      auto summed = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(summed);
      else
        p.mutable_grad() = summed.clone();
    }
  }
  s.last_wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace olm::distributed
