// The metrics of one optimizer step, listed once. Each row is X(type, name, doc). The
// StepMetrics struct, the C API's olm_step_metrics field list and conversion, the metrics JSON
// lines and the Rust and Go StepMetrics (scripts/generate_step_metrics.py, checked by the
// `generated_step_metrics` test) all expand these lists. A new metric is its row here, the
// code that computes it (trainer.cpp) and, when C callers see it, its field in olm.h (in the
// same order; capi_struct.h's static_assert fails the build otherwise), then a run of the
// generator.
#pragma once
#include <cstdint>

// Always reported (and in olm_step_metrics, Rust and Go).
#define OLM_STEP_METRICS(X)                                                                                 \
  X(int64_t, step, "Optimizer steps taken so far, this one included.")                                      \
  X(double, loss, "ce_loss + z_loss: the mean over the batch's target tokens.")                             \
  X(double, ce_loss, "The cross-entropy part of loss.")                                                     \
  X(double, z_loss, "The z-loss part of loss (0 without z-loss).")                                          \
  X(double, grad_norm, "The total gradient norm before clipping.")                                          \
  X(double, lr, "The learning rate of the default parameter group for this step.")                          \
  X(int64_t, tokens, "Tokens in this step's batch.")                                                        \
  X(int64_t, tokens_seen, "Tokens trained on so far.")                                                      \
  X(double, tokens_per_second, "Throughput of this step.")                                                  \
  X(double, step_seconds, "Wall time of this step.")                                                        \
  X(bool, skipped,                                                                                          \
    "True when the step was skipped (NaN/Inf loss or gradients, or the skip-step rule): the parameters "   \
    "were left unchanged.")                                                                                 \
  X(int64_t, skipped_steps, "Steps skipped so far.")                                                        \
  X(double, lb_loss,                                                                                        \
    "MoE models: the routers' weighted load-balancing loss over the batch (in the gradient, not in loss, " \
    "as in OLMo-core); 0 for dense models.")                                                                \
  X(double, router_z_loss, "MoE models: the routers' weighted z-loss over the batch; 0 for dense models.")

// Data parallelism (in olm_step_metrics, Rust and Go; in the JSON when comm_bytes > 0).
#define OLM_STEP_METRICS_COMM(X)                                                                  \
  X(int64_t, comm_bytes, "Bytes this rank all-reduced during the step (0 without a process group).") \
  X(double, comm_wait_seconds, "Seconds the step waited for the gradient reduction after backward.")

// FSDP only (C++ and the JSON when param_shard_bytes > 0).
#define OLM_STEP_METRICS_FSDP(X)                                                                          \
  X(int64_t, param_shard_bytes, "Bytes of parameter shards this rank holds persistently.")                  \
  X(int64_t, param_unsharded_bytes, "The parameters' unsharded bytes, for comparison.")                     \
  X(int64_t, optim_state_bytes, "Bytes of optimizer state this rank holds.")                                \
  X(int64_t, peak_gathered_bytes, "The most bytes of gathered (full) units held at once during the step.")
