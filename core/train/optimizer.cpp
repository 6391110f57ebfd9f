#include "core/train/optimizer.h"

#include <fnmatch.h>

#include <deque>

#include "core/error.h"

namespace olm::train {

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

std::string Optimizer::parameter_of_state(const std::string& state_name) {
  const auto dot = state_name.rfind('.');
  return dot == std::string::npos ? std::string() : state_name.substr(0, dot);
}

at::Tensor Optimizer::step_factor(const at::Tensor& loss, const at::Tensor&) {
  return at::ones({}, loss.options().dtype(at::kFloat));
}

namespace {

// Per-parameter state kept in parallel to groups_: index [group][param].
template <class State>
using Slots = std::vector<std::vector<State>>;

struct AdamState {
  at::Tensor exp_avg, exp_avg_sq, step;
};

// AdamW (decoupled) or Adam (L2), on ATen's fused multi-tensor kernels (the path
// torch.optim.AdamW(fused=True) takes). A skipped step passes found_inf so the kernel leaves
// parameters and moments untouched; the step counters are rolled back as PyTorch does.
class FusedAdam : public Optimizer {
 public:
  FusedAdam(const OptimizerSpec& spec, bool decoupled) : spec_(spec), decoupled_(decoupled) {}

  void step(const at::Tensor& factor) override {
    at::NoGradGuard no_grad;
    const auto found_inf = (1 - factor).to(at::kFloat);
    for (size_t g = 0; g < groups_.size(); ++g) {
      auto& group = groups_[g];
      std::vector<at::Tensor> params, grads, m, v, steps, none;
      for (size_t i = 0; i < group.params.size(); ++i) {
        at::Tensor& p = *group.params[i];
        if (!p.grad().defined()) continue;
        auto& s = slot(g, i, p);
        params.push_back(p);
        grads.push_back(p.grad());
        m.push_back(s.exp_avg);
        v.push_back(s.exp_avg_sq);
        steps.push_back(s.step);
      }
      if (params.empty()) continue;
      at::_foreach_add_(steps, 1);
      if (decoupled_) {
        at::_fused_adamw_(params, grads, m, v, none, steps, group.lr, spec_.beta1, spec_.beta2,
                          group.weight_decay, spec_.eps, false, false, std::nullopt, found_inf);
      } else {
        at::_fused_adam_(params, grads, m, v, none, steps, group.lr, spec_.beta1, spec_.beta2,
                         group.weight_decay, spec_.eps, false, false, std::nullopt, found_inf);
      }
      for (auto& st : steps) st.sub_(found_inf);
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> state() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        if (g >= state_.size() || i >= state_[g].size() || !state_[g][i].step.defined()) continue;
        const auto& s = state_[g][i];
        const auto& name = groups_[g].names[i];
        out.emplace_back(name + ".exp_avg", s.exp_avg);
        out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq);
        out.emplace_back(name + ".step", s.step);
      }
    return out;
  }

  std::vector<std::string> state_keys() const override { return {"exp_avg", "exp_avg_sq", "step"}; }

  void load_state(const std::map<std::string, at::Tensor>& tensors) override {
    at::NoGradGuard no_grad;
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        const auto& name = groups_[g].names[i];
        auto it = tensors.find(name + ".step");
        if (it == tensors.end()) continue;
        auto& s = slot(g, i, *groups_[g].params[i]);
        s.exp_avg.copy_(tensors.at(name + ".exp_avg"));
        s.exp_avg_sq.copy_(tensors.at(name + ".exp_avg_sq"));
        s.step.copy_(it->second);
      }
  }

 private:
  AdamState& slot(size_t g, size_t i, const at::Tensor& p) {
    if (state_.size() < groups_.size()) state_.resize(groups_.size());
    if (state_[g].size() < groups_[g].params.size()) state_[g].resize(groups_[g].params.size());
    auto& s = state_[g][i];
    if (!s.step.defined()) {
      s.exp_avg = at::zeros_like(p, at::MemoryFormat::Preserve);
      s.exp_avg_sq = at::zeros_like(p, at::MemoryFormat::Preserve);
      s.step = at::zeros({}, p.options().dtype(at::kFloat));
    }
    return s;
  }

  OptimizerSpec spec_;
  bool decoupled_;
  Slots<AdamState> state_;
};

// State for the per-tensor optimizers written step for step after OLMo-core.
class ManualOptimizer : public Optimizer {
 public:
  explicit ManualOptimizer(OptimizerSpec spec) : spec_(std::move(spec)) {}

  // Visits every parameter with a gradient. The gradient handed to update() is zeroed on a
  // skipped step, so NaN/Inf never reaches the optimizer state.
  void step(const at::Tensor& factor) override {
    at::NoGradGuard no_grad;
    for (size_t g = 0; g < groups_.size(); ++g) {
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        at::Tensor& p = *groups_[g].params[i];
        if (!p.grad().defined()) continue;
        const auto grad = at::where(factor > 0, p.grad(), at::zeros_like(p.grad()));
        update(groups_[g], g, i, p, grad, factor);
      }
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> state() const override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        if (g >= state_.size() || i >= state_[g].size()) continue;
        for (const auto& [key, t] : state_[g][i]) out.emplace_back(groups_[g].names[i] + "." + key, t);
      }
    return out;
  }

  void load_state(const std::map<std::string, at::Tensor>& tensors) override {
    at::NoGradGuard no_grad;
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t i = 0; i < groups_[g].params.size(); ++i) {
        const std::string prefix = groups_[g].names[i] + ".";
        for (const auto& key : state_keys()) {
          auto it = tensors.find(prefix + key);
          if (it == tensors.end()) continue;
          slot(g, i, key, *groups_[g].params[i]).copy_(it->second);
        }
      }
  }

 protected:
  virtual void update(const ParamGroup& group, size_t g, size_t i, at::Tensor& p, const at::Tensor& grad,
                      const at::Tensor& factor) = 0;

  at::Tensor& slot(size_t g, size_t i, const std::string& key, const at::Tensor& p) {
    if (state_.size() < groups_.size()) state_.resize(groups_.size());
    if (state_[g].size() < groups_[g].params.size()) state_[g].resize(groups_[g].params.size());
    auto& map = state_[g][i];
    auto it = map.find(key);
    if (it == map.end()) {
      at::Tensor t = key == "step" ? at::zeros({}, p.options().dtype(at::kFloat)) : at::zeros_like(p);
      it = map.emplace(key, t).first;
    }
    return it->second;
  }

  bool has_slot(size_t g, size_t i, const std::string& key) const {
    return g < state_.size() && i < state_[g].size() && state_[g][i].count(key) > 0;
  }

  OptimizerSpec spec_;
  Slots<std::map<std::string, at::Tensor>> state_;
};

// olmo_core.optim.Lion (lion_step).
class Lion : public ManualOptimizer {
 public:
  using ManualOptimizer::ManualOptimizer;

 protected:
  void update(const ParamGroup& group, size_t g, size_t i, at::Tensor& p, const at::Tensor& grad,
              const at::Tensor& factor) override {
    auto& exp_avg = slot(g, i, "exp_avg", p);
    p.mul_(1 - factor * (group.lr * group.weight_decay));
    auto step = exp_avg * spec_.beta1 + grad * (1 - spec_.beta1);
    step.mul_(factor);
    p.add_(at::sign(step), -group.lr);
    exp_avg.mul_(1 - factor * (1 - spec_.beta2)).add_(factor * grad, 1 - spec_.beta2);
  }
  std::vector<std::string> state_keys() const override { return {"exp_avg"}; }
};

// torch.optim.SGD with momentum and (coupled) weight decay.
class Sgd : public ManualOptimizer {
 public:
  using ManualOptimizer::ManualOptimizer;

 protected:
  void update(const ParamGroup& group, size_t g, size_t i, at::Tensor& p, const at::Tensor& grad,
              const at::Tensor& factor) override {
    auto d_p = group.weight_decay != 0 ? grad + group.weight_decay * p : grad;
    if (spec_.momentum != 0) {
      const bool first = !has_slot(g, i, "momentum_buffer");
      auto& buf = slot(g, i, "momentum_buffer", p);
      if (first) {
        buf.copy_(d_p * factor);
      } else {
        // buf = momentum * buf + d_p on a real step; unchanged on a skipped one.
        buf.copy_(at::where(factor > 0, buf * spec_.momentum + d_p, buf));
      }
      d_p = buf;
    }
    p.add_(d_p * factor, -group.lr);
  }

  std::vector<std::string> state_keys() const override { return {"momentum_buffer"}; }
};

// olmo_core.optim.SkipStepAdamW: adamw_step with the rolling mean + k sigma skip rule over
// the last `rolling_interval_length` losses and gradient norms, all on the device.
class SkipStepAdamW : public ManualOptimizer {
 public:
  using ManualOptimizer::ManualOptimizer;

  at::Tensor step_factor(const at::Tensor& loss, const at::Tensor& grad_norm) override {
    push(losses_, loss.detach().to(at::kFloat));
    if (grad_norm.defined()) push(grad_norms_, grad_norm.detach().to(at::kFloat));
    const auto n = static_cast<int64_t>(losses_.size());
    if (n < std::max<int64_t>(2, spec_.rolling_interval_length / 2)) {
      return at::ones({}, loss.options().dtype(at::kFloat));
    }
    auto rule = [&](const std::deque<at::Tensor>& history) {
      std::vector<at::Tensor> past(history.begin(), history.end() - 1);
      auto [std, mean] = at::std_mean(at::stack(past));
      return (history.back() - mean) <= spec_.sigma_factor * std;
    };
    auto ok = rule(losses_);
    if (!grad_norms_.empty()) ok = at::logical_and(ok, rule(grad_norms_));
    return ok.to(at::kFloat);
  }


  std::vector<double> recent_losses() const override { return to_doubles(losses_); }
  std::vector<double> recent_grad_norms() const override { return to_doubles(grad_norms_); }
  void restore_history(const std::vector<double>& losses, const std::vector<double>& norms) override {
    losses_.clear();
    grad_norms_.clear();
    const auto device = groups_.empty() || groups_[0].params.empty() ? at::Device(at::kCPU)
                                                                     : groups_[0].params[0]->device();
    for (double v : losses) losses_.push_back(at::scalar_tensor(v, at::TensorOptions().device(device)).to(at::kFloat));
    for (double v : norms) grad_norms_.push_back(at::scalar_tensor(v, at::TensorOptions().device(device)).to(at::kFloat));
  }

 protected:
  // olmo_core.optim.adamw.adamw_step.
  void update(const ParamGroup& group, size_t g, size_t i, at::Tensor& p, const at::Tensor& grad,
              const at::Tensor& factor) override {
    auto& exp_avg = slot(g, i, "exp_avg", p);
    auto& exp_avg_sq = slot(g, i, "exp_avg_sq", p);
    auto& step = slot(g, i, "step", p);
    const double lr = group.lr, beta1 = spec_.beta1, beta2 = spec_.beta2;
    p.mul_(1 - factor * (lr * group.weight_decay));
    exp_avg.lerp_(grad.to(exp_avg.scalar_type()), (factor * (1 - beta1)).to(exp_avg.scalar_type()));
    exp_avg_sq.mul_(1 - factor * (1 - beta2));
    exp_avg_sq.add_(factor * grad * grad, 1 - beta2);
    auto bias_correction1 = 1 - at::pow(beta1, step + 1);
    auto bias_correction2 = 1 - at::pow(beta2, step + 1);
    auto step_size = lr / bias_correction1;
    auto denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(spec_.eps);
    auto change = -step_size * at::div(exp_avg, denom);
    change.mul_(factor);
    p.add_(change);
    step.add_(factor);
  }
  std::vector<std::string> state_keys() const override { return {"exp_avg", "exp_avg_sq", "step"}; }

 private:
  void push(std::deque<at::Tensor>& history, at::Tensor value) {
    history.push_back(std::move(value));
    while (static_cast<int64_t>(history.size()) > spec_.rolling_interval_length + 1) history.pop_front();
  }
  static std::vector<double> to_doubles(const std::deque<at::Tensor>& history) {
    std::vector<double> out;
    for (const auto& t : history) out.push_back(t.item<double>());
    return out;
  }

  std::deque<at::Tensor> losses_, grad_norms_;
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec,
                                          const std::vector<nn::NamedParameter>& params) {
  std::unique_ptr<Optimizer> opt;
  if (spec.name == "adamw") opt = std::make_unique<FusedAdam>(spec, true);
  else if (spec.name == "adam") opt = std::make_unique<FusedAdam>(spec, false);
  else if (spec.name == "lion") opt = std::make_unique<Lion>(spec);
  else if (spec.name == "sgd") opt = std::make_unique<Sgd>(spec);
  else if (spec.name == "skip_step_adamw") opt = std::make_unique<SkipStepAdamW>(spec);
  else fail(ErrorCode::kInvalidConfig, "optimizer.name: unknown optimizer '" + spec.name + "'");

  // Groups: one per override (in order), then the default group; OLMo-core drops empty ones.
  std::vector<ParamGroup> groups(spec.group_overrides.size() + 1);
  for (size_t g = 0; g < spec.group_overrides.size(); ++g) {
    groups[g].lr = groups[g].initial_lr = spec.group_overrides[g].lr.value_or(spec.lr);
    groups[g].weight_decay = spec.group_overrides[g].weight_decay.value_or(spec.weight_decay);
  }
  groups.back().lr = groups.back().initial_lr = spec.lr;
  groups.back().weight_decay = spec.weight_decay;
  for (const auto& p : params) {
    size_t target = spec.group_overrides.size();
    for (size_t g = 0; g < spec.group_overrides.size() && target == spec.group_overrides.size(); ++g)
      for (const auto& pattern : spec.group_overrides[g].params)
        if (glob_match(pattern, p.name)) {
          target = g;
          break;
        }
    groups[target].params.push_back(p.tensor);
    groups[target].names.push_back(p.name);
  }
  for (auto& g : groups)
    if (!g.params.empty()) opt->groups().push_back(std::move(g));
  return opt;
}

}  // namespace olm::train
