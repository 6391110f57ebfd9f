// Activation checkpointing for transformer blocks: the forward keeps only the block's input;
// the backward recomputes the block with gradients and back-propagates through it
// (torch.utils.checkpoint's non-reentrant idea, written as an autograd Function).
#pragma once
#include "core/nn/block.h"

namespace olm::train {

// doc_positions: see nn::Attention::forward (may be undefined). aux (MoE blocks, may be NULL):
// receives the routers' losses of the forward as detached values (for reporting); their
// gradients are added in the backward, where the block is recomputed.
at::Tensor checkpointed_block_forward(nn::TransformerBlock& block, const at::Tensor& x,
                                      const at::Tensor& doc_positions, nn::MoEAuxLosses* aux);

}  // namespace olm::train
