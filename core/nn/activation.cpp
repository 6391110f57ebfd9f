#include "core/nn/activation.h"

#include <functional>
#include <map>

#include "core/config/config.h"
#include "core/error.h"

namespace olm::nn {
namespace {

// torch.nn defaults: LeakyReLU slope 0.01, ELU alpha 1; softmax over the last dimension.
const std::map<std::string, std::function<at::Tensor(const at::Tensor&)>>& registry() {
  static const std::map<std::string, std::function<at::Tensor(const at::Tensor&)>> r = {
      {"relu", [](const at::Tensor& x) { return at::relu(x); }},
      {"leaky_relu", [](const at::Tensor& x) { return at::leaky_relu(x, 0.01); }},
      {"elu", [](const at::Tensor& x) { return at::elu(x); }},
      {"selu", [](const at::Tensor& x) { return at::selu(x); }},
      {"gelu", [](const at::Tensor& x) { return at::gelu(x); }},
      {"gelu_tanh", [](const at::Tensor& x) { return at::gelu(x, "tanh"); }},
      {"silu", [](const at::Tensor& x) { return at::silu(x); }},
      {"swish", [](const at::Tensor& x) { return at::silu(x); }},
      {"mish", [](const at::Tensor& x) { return at::mish(x); }},
      {"softplus", [](const at::Tensor& x) { return at::softplus(x); }},
      {"tanh", [](const at::Tensor& x) { return at::tanh(x); }},
      {"sigmoid", [](const at::Tensor& x) { return at::sigmoid(x); }},
      {"softmax", [](const at::Tensor& x) { return at::softmax(x, -1); }},
      {"identity", [](const at::Tensor& x) { return x; }},
  };
  return r;
}

}  // namespace

at::Tensor activate(const std::string& name, const at::Tensor& x) {
  const auto& r = registry();
  auto it = r.find(name);
  require(it != r.end(), ErrorCode::kInvalidConfig, "unknown activation '" + name + "'");
  return it->second(x);
}

}  // namespace olm::nn

namespace olm {

const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& entry : nn::registry()) out.push_back(entry.first);
    return out;
  }();
  return names;
}

}  // namespace olm
