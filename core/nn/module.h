// A minimal module tree over ATen: parameters and children registered in construction order,
// so the dotted names compose into OLMo-core's state-dict keys ("blocks.0.attention.w_q.weight").
// We do not use torch::nn::Module: its headers triple compile times and we need nothing from it
// beyond naming, which this gives us with full control over the names.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace olm::nn {

struct NamedParameter {
  std::string name;
  at::Tensor* tensor;  // points into the owning module, stable for the module's lifetime
};

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  void collect_parameters(const std::string& prefix, std::vector<NamedParameter>& out) {
    for (auto& [name, tensor] : parameters_) out.push_back({prefix + name, tensor.get()});
    for (auto& [name, child] : children_) child->collect_parameters(prefix + name + ".", out);
  }

  std::vector<NamedParameter> named_parameters() {
    std::vector<NamedParameter> out;
    collect_parameters("", out);
    return out;
  }

  // Persistent buffers: part of the state dict (as in PyTorch), never trained or counted.
  void collect_buffers(const std::string& prefix, std::vector<NamedParameter>& out) {
    for (auto& [name, tensor] : buffers_) out.push_back({prefix + name, tensor.get()});
    for (auto& [name, child] : children_) child->collect_buffers(prefix + name + ".", out);
  }

  // Parameters then buffers: everything a state-dict file holds.
  std::vector<NamedParameter> named_state() {
    std::vector<NamedParameter> out;
    collect_parameters("", out);
    collect_buffers("", out);
    return out;
  }

 protected:
  at::Tensor& register_parameter(const std::string& name, at::Tensor tensor) {
    parameters_.emplace_back(name, std::make_unique<at::Tensor>(std::move(tensor)));
    return *parameters_.back().second;
  }

  at::Tensor& register_buffer(const std::string& name, at::Tensor tensor) {
    buffers_.emplace_back(name, std::make_unique<at::Tensor>(std::move(tensor)));
    return *buffers_.back().second;
  }

  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  std::vector<std::pair<std::string, std::unique_ptr<at::Tensor>>> parameters_;
  std::vector<std::pair<std::string, std::unique_ptr<at::Tensor>>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// nn.Linear: y = x W^T + b, weight (out_features, in_features).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, const at::TensorOptions& options)
      : in_features_(in_features),
        weight_(register_parameter("weight", at::zeros({out_features, in_features}, options))),
        bias_(bias ? &register_parameter("bias", at::zeros({out_features}, options)) : nullptr) {}

  at::Tensor forward(const at::Tensor& x) const {
    return at::linear(x, weight_, bias_ ? std::optional<at::Tensor>(*bias_) : std::nullopt);
  }

  int64_t in_features() const { return in_features_; }
  at::Tensor& weight() { return weight_; }
  at::Tensor* bias() { return bias_; }

 private:
  int64_t in_features_;
  at::Tensor& weight_;
  at::Tensor* bias_;
};

}  // namespace olm::nn
