// Optimizers over named parameters, with OLMo-core's semantics: AdamW and Adam on ATen's
// fused kernels, Lion and SkipStepAdamW as OLMo-core writes them (step_factor tensors, so a
// skipped step needs no host sync), SGD with momentum as torch.optim.SGD.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/train/train_config.h"

namespace olm::train {

struct ParamGroup {
  std::vector<at::Tensor*> params;
  std::vector<std::string> names;
  double initial_lr = 0;  // the configured lr; schedulers scale from it
  double lr = 0;
  double weight_decay = 0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Applies one update to every parameter with a gradient. `step_factor` is a float32 scalar
  // tensor on the parameters' device: 1 to step, 0 to skip (NaN/Inf or the skip-step rule),
  // decided without reading it on the host.
  virtual void step(const at::Tensor& step_factor) = 0;

  // SkipStepAdamW's rolling-statistics rule; 1 for the others.
  virtual at::Tensor step_factor(const at::Tensor& loss, const at::Tensor& grad_norm);

  std::vector<ParamGroup>& groups() { return groups_; }

  // State tensors by "<param name>.<state>" for checkpoints, and their restoration.
  virtual std::vector<std::pair<std::string, at::Tensor>> state() const = 0;
  virtual void load_state(const std::map<std::string, at::Tensor>& tensors) = 0;
  // The <state> suffixes this optimizer keeps per parameter ("exp_avg", "step", ...), the same
  // on every rank: a sharded save names what other ranks may hold without asking them.
  virtual std::vector<std::string> state_keys() const = 0;
  // The parameter a state name "<param name>.<state>" belongs to ("" for a name without one).
  static std::string parameter_of_state(const std::string& state_name);

  // SkipStepAdamW's rolling windows (empty for the others), for checkpoints.
  virtual std::vector<double> recent_losses() const { return {}; }
  virtual std::vector<double> recent_grad_norms() const { return {}; }
  virtual void restore_history(const std::vector<double>&, const std::vector<double>&) {}

 protected:
  std::vector<ParamGroup> groups_;
};

// Assigns parameters to groups (the first override whose glob matches wins; unmatched ones
// form the default group) and builds the configured optimizer.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec,
                                          const std::vector<nn::NamedParameter>& params);

bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace olm::train
