// Activation checkpointing for transformer blocks: the forward keeps only the block's input;
// the backward recomputes the block with gradients and back-propagates through it
// (torch.utils.checkpoint's non-reentrant idea, written as an autograd Function).
#pragma once
#include "core/nn/block.h"

namespace olm::train {

at::Tensor checkpointed_block_forward(nn::TransformerBlock& block, const at::Tensor& x,
                                     const at::Tensor& doc_positions);

}  // namespace olm::train
