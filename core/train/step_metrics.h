// The metrics of one optimizer step, listed once. Each list row is X(type, name); the
// StepMetrics struct, the C API's olm_step_metrics field list and conversion, and the metrics
// JSON lines all expand these lists, so a new metric is a row here, the code that computes it
// (trainer.cpp) and, when C callers see it, its field in olm.h (in the same order) and the Rust
// and Go structs.
#pragma once
#include <cstdint>

// Always reported (and in olm_step_metrics).
//   step: optimizer steps taken so far, this one included
//   loss: ce_loss + z_loss, mean over the batch's target tokens; z_loss is 0 without z-loss
//   grad_norm: before clipping; lr: of the default parameter group
//   tokens: in this batch; tokens_seen: all tokens trained on so far
//   skipped: NaN/Inf or the skip-step rule left the parameters untouched; skipped_steps: so far
//   lb_loss, router_z_loss (MoE models): the routers' weighted load-balancing and z-losses over
//     the batch (summed over blocks, normalized like the loss); they join the gradient but not
//     `loss`, as in OLMo-core
#define OLM_STEP_METRICS(X)                                                                     \
  X(int64_t, step)                                                                              \
  X(double, loss) X(double, ce_loss) X(double, z_loss) X(double, grad_norm) X(double, lr)       \
  X(int64_t, tokens) X(int64_t, tokens_seen) X(double, tokens_per_second) X(double, step_seconds) \
  X(bool, skipped) X(int64_t, skipped_steps) X(double, lb_loss) X(double, router_z_loss)

// Data parallelism (in olm_step_metrics; in the JSON when comm_bytes > 0): bytes this rank
// all-reduced in this step, and the time the step waited for the reduction after backward.
#define OLM_STEP_METRICS_COMM(X) X(int64_t, comm_bytes) X(double, comm_wait_seconds)

// FSDP only (C++ and the JSON when param_shard_bytes > 0): bytes this rank holds persistently
// (its parameter shards, its optimizer state), the parameters' unsharded bytes for comparison,
// and the most bytes of gathered (full) units held at once during the step.
#define OLM_STEP_METRICS_FSDP(X)                                                      \
  X(int64_t, param_shard_bytes) X(int64_t, param_unsharded_bytes) X(int64_t, optim_state_bytes) \
  X(int64_t, peak_gathered_bytes)
