#include "core/train/activation_checkpointing.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace olm::train {
namespace {

struct BlockCheckpoint : public torch::autograd::Function<BlockCheckpoint> {
  // doc_positions is optional: autograd Functions refuse undefined tensor arguments.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x,
                            std::optional<at::Tensor> doc_positions, int64_t block_address) {
    ctx->saved_data["block"] = block_address;
    ctx->saved_data["doc_positions"] = doc_positions;  // integer positions: never differentiated
    // Autocast is thread-local and the backward may run on another thread: carry it over.
    const auto device_type = x.device().type();
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(device_type);
    ctx->saved_data["autocast_dtype"] = static_cast<int64_t>(at::autocast::get_autocast_dtype(device_type));
    ctx->save_for_backward({x});
    at::NoGradGuard no_grad;
    return reinterpret_cast<nn::TransformerBlock*>(block_address)
        ->forward(x, nullptr, doc_positions.value_or(at::Tensor()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto* block = reinterpret_cast<nn::TransformerBlock*>(ctx->saved_data["block"].toInt());
    at::Tensor x = ctx->get_saved_variables()[0].detach();
    x.set_requires_grad(true);
    const auto device_type = x.device().type();
    const bool autocast = ctx->saved_data["autocast"].toBool();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt());
    const bool prev_enabled = at::autocast::is_autocast_enabled(device_type);
    const auto prev_dtype = at::autocast::get_autocast_dtype(device_type);
    at::autocast::set_autocast_enabled(device_type, autocast);
    at::autocast::set_autocast_dtype(device_type, dtype);
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      const auto& positions = ctx->saved_data["doc_positions"];
      y = block->forward(x, nullptr, positions.isNone() ? at::Tensor() : positions.toTensor());
    }
    at::autocast::set_autocast_enabled(device_type, prev_enabled);
    at::autocast::set_autocast_dtype(device_type, prev_dtype);
    // Accumulates into the block's parameters' .grad and into x.grad.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed_block_forward(nn::TransformerBlock& block, const at::Tensor& x,
                                     const at::Tensor& doc_positions) {
  return BlockCheckpoint::apply(x, doc_positions.defined() ? std::optional<at::Tensor>(doc_positions) : std::nullopt,
                                reinterpret_cast<int64_t>(&block));
}

}  // namespace olm::train
