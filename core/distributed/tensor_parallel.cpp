#include "core/distributed/tensor_parallel.h"

#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"

namespace olm::distributed {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The collectives run on the backend's device; results come back to the caller's.
at::Tensor on_comm(const ProcessGroup& g, const at::Tensor& t) { return t.to(g.comm_device()).contiguous(); }

// Every rank's x (same shape), concatenated along dim in rank order.
at::Tensor all_gather_along(ProcessGroup& g, const at::Tensor& x, int64_t dim) {
  const int64_t n = g.world_size();
  const auto input = on_comm(g, x);
  std::vector<int64_t> stacked_shape{n};
  for (auto s : input.sizes()) stacked_shape.push_back(s);
  auto stacked = at::empty(stacked_shape, input.options());
  g.all_gather_into_async(stacked.view({-1}), input.view({-1}))->wait();  // flat: Gloo checks shapes
  // (n, ..., d, ...) -> (..., n, d, ...) -> (..., n * d, ...)
  auto moved = stacked.movedim(0, dim);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape[static_cast<size_t>(dim)] *= n;
  return moved.reshape(shape).to(x.device());
}

// The sum over the ranks of x, this rank's contiguous 1/n of it along dim.
at::Tensor reduce_scatter_along(ProcessGroup& g, const at::Tensor& x, int64_t dim) {
  const int64_t n = g.world_size();
  require(x.size(dim) % n == 0, ErrorCode::kInvalidArgument,
          "tensor parallelism: dimension " + std::to_string(dim) + " of size " + std::to_string(x.size(dim)) +
              " does not split over " + std::to_string(n) + " ranks");
  std::vector<int64_t> split_shape(x.sizes().begin(), x.sizes().end());
  split_shape[static_cast<size_t>(dim)] /= n;
  split_shape.insert(split_shape.begin() + dim, n);
  // (..., n * d, ...) -> (n, ..., d, ...), rank r's block first-contiguous at r.
  const auto blocks = on_comm(g, x.reshape(split_shape).movedim(dim, 0));
  std::vector<int64_t> out_shape(blocks.sizes().begin() + 1, blocks.sizes().end());
  auto out = at::empty(out_shape, blocks.options());
  // Flat, as Gloo checks the leading dimensions (input's = size x output's).
  g.reduce_scatter_sum_async(out.view({-1}), blocks.view({-1}))->wait();
  return out.to(x.device());
}

at::Tensor all_reduce_sum_copy(ProcessGroup& g, const at::Tensor& x) {
  auto out = on_comm(g, x).clone();
  g.all_reduce_sum({out});
  return out.to(x.device());
}

struct GatherSequence : public torch::autograd::Function<GatherSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& shard, ProcessGroup* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return all_gather_along(*g, shard, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    return {reduce_scatter_along(*g, grads[0], 1), at::Tensor()};
  }
};

struct ReduceScatterSequence : public torch::autograd::Function<ReduceScatterSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& partial, ProcessGroup* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return reduce_scatter_along(*g, partial, 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    return {all_gather_along(*g, grads[0], 1), at::Tensor()};
  }
};

struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& partial, ProcessGroup* g) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(g);
    return all_reduce_sum_copy(*g, partial);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    return {all_reduce_sum_copy(*g, grads[0]), at::Tensor()};
  }
};

struct GatherLastDim : public torch::autograd::Function<GatherLastDim> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& shard, ProcessGroup* g) {
    ctx->saved_data["rank"] = g->rank();
    ctx->saved_data["width"] = shard.size(-1);
    return all_gather_along(*g, shard, shard.dim() - 1);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t width = ctx->saved_data["width"].toInt(), rank = ctx->saved_data["rank"].toInt();
    return {grads[0].narrow(-1, rank * width, width).contiguous(), at::Tensor()};
  }
};

}  // namespace

TensorParallelGroup::TensorParallelGroup(std::shared_ptr<ProcessGroup> group) : group_(std::move(group)) {
  require(group_ != nullptr, ErrorCode::kInvalidArgument, "TensorParallelGroup: group is NULL");
}

// The autograd functions hold the group by raw pointer: the model that runs them holds this
// object (and so the group) for as long as its graphs can be run backward.
at::Tensor TensorParallelGroup::gather_sequence(const at::Tensor& shard) {
  return GatherSequence::apply(shard, group_.get());
}

at::Tensor TensorParallelGroup::reduce_scatter_sequence(const at::Tensor& partial) {
  return ReduceScatterSequence::apply(partial, group_.get());
}

at::Tensor TensorParallelGroup::all_reduce_sum(const at::Tensor& partial) {
  return AllReduceSum::apply(partial, group_.get());
}

at::Tensor TensorParallelGroup::gather_last_dim(const at::Tensor& shard) {
  return GatherLastDim::apply(shard, group_.get());
}

void TensorParallelGroup::all_reduce_sum_(at::Tensor& t) {
  at::NoGradGuard no_grad;
  t.copy_(all_reduce_sum_copy(*group_, t));
}

void TensorParallelGroup::all_reduce_max_(at::Tensor& t) {
  // c10d's Gloo wrapper in process_group.* reduces by sum only: gather every rank's and take
  // the max, exact (no arithmetic on the values).
  at::NoGradGuard no_grad;
  const auto flat = t.detach().reshape({1, -1});
  t.copy_(all_gather_along(*group_, flat, 0).amax(0).view(t.sizes()));
}

}  // namespace olm::distributed
