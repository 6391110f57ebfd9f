#include "core/model.h"

#include <fnmatch.h>
#include <unistd.h>

#include <set>

#include "core/device.h"
#include "core/cpu_allocator.h"
#include "core/error.h"
#include "core/io/safetensors.h"

namespace olm {
namespace {

std::string shape_string(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

}  // namespace

Model::Model(const Config& config, const std::string& device, const ModelOptions& options)
    : config_(config), device_(parse_device(device, "device")) {
  install_caching_cpu_allocator();
  const ModelSpec& spec = config.spec();
  const at::ScalarType dtype = options.param_dtype.value_or(spec.dtype);
  require(dtype == at::kFloat || dtype == at::kBFloat16, ErrorCode::kInvalidArgument,
          "param_dtype must be float32 or bfloat16");
  // The model is built in float32 on the host before it moves, so the host must hold it.
  const long double host_bytes = static_cast<long double>(config.num_params().total) * 4;
  const uint64_t host_memory = physical_memory_bytes();
  require(host_memory == 0 || host_bytes < static_cast<long double>(host_memory), ErrorCode::kOutOfMemory,
          "the model's " + std::to_string(config.num_params().total) +
              " parameters need " + std::to_string(static_cast<uint64_t>(host_bytes / (1 << 20))) +
              " MiB to build but this machine has " + std::to_string(host_memory >> 20) + " MiB");
  module_ = std::make_unique<nn::Transformer>(spec);
  if (options.init_weights) nn::init_weights(*module_);
  module_->to(device_, dtype);
  for (auto& p : module_->named_parameters()) {
    // OLMo-core's freeze_params: fnmatch without FNM_PATHNAME, so `*` also matches dots.
    bool frozen = false;
    for (const auto& pattern : spec.freeze_params) frozen = frozen || ::fnmatch(pattern.c_str(), p.name.c_str(), 0) == 0;
    if (frozen) p.tensor->set_requires_grad(false);
    parameter_info_.push_back({p.name, p.tensor->scalar_type(), p.tensor->sizes().vec(), !frozen});
  }
}

int64_t Model::num_params() const {
  int64_t total = 0;
  for (auto& p : parameter_info_) total += c10::multiply_integers(p.shape);
  return total;
}

at::Tensor Model::checked_tokens(const at::Tensor& ids, const char* argument,
                                 std::optional<int64_t> ignore_index) const {
  const std::string arg = argument;
  require(ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt,
          ErrorCode::kInvalidArgument,
          arg + ": dtype must be int32 or int64 (got " + c10::toString(ids.scalar_type()) + ")");
  require(ids.dim() == 2, ErrorCode::kInvalidArgument,
          arg + ": shape must be (batch, seq_len) (got " + shape_string(ids.sizes()) + ")");
  require(ids.size(0) > 0 && ids.size(1) > 0, ErrorCode::kInvalidArgument,
          arg + ": batch and seq_len must be positive (got " + shape_string(ids.sizes()) + ")");
  const int64_t vocab = config_.spec().vocab_size;
  auto values = ids.to(device_, at::kLong);
  auto valid = values.ge(0).logical_and(values.lt(vocab));
  if (ignore_index) valid = valid.logical_or(values.eq(*ignore_index));
  if (!valid.all().item<bool>()) {
    auto bad = values.masked_select(valid.logical_not()).slice(0, 0, 1).item<int64_t>();
    fail(ErrorCode::kInvalidArgument,
         arg + ": value " + std::to_string(bad) + " is outside the vocabulary [0, " +
             std::to_string(vocab) + ")" +
             (ignore_index ? " and is not ignore_index (" + std::to_string(*ignore_index) + ")" : ""));
  }
  return values;
}

at::Tensor Model::checked_doc_positions(const at::Tensor& ids, const at::Tensor& cu_doc_lens,
                                        int64_t max_doc_len) const {
  require(max_doc_len >= 0, ErrorCode::kInvalidArgument,
          "max_doc_len must be >= 0 (got " + std::to_string(max_doc_len) + ")");
  if (!cu_doc_lens.defined()) return at::Tensor();
  return nn::document_positions(cu_doc_lens.to(device_), ids.size(0), ids.size(1), max_doc_len);
}

void Model::require_materialized(const std::string& what) const {
  // Tensor parallelism leaves each rank a slice of the split matrices, and context parallelism
  // a part of every sequence: neither is a model one process can run or save on its own.
  require(!module_->tensor_parallel(), ErrorCode::kInvalidArgument,
          what + ": the model's matrices are split across ranks by a trainer with tensor_parallel.degree " +
              std::to_string(module_->tensor_parallel() ? module_->tensor_parallel()->size() : 1) +
              " (each rank holds a slice); save a checkpoint (olm convert writes it whole)");
  require(!module_->context_parallel(), ErrorCode::kInvalidArgument,
          what + ": the model is set up for context parallelism by a trainer (every rank runs part of each "
                 "sequence); detach the trainer's process group first");
  // FSDP keeps only each rank's slice of the weights between steps: the parameters' storage
  // is released, so reading them would read freed memory.
  for (auto& p : module_->named_parameters()) {
    const at::Tensor& t = *p.tensor;
    const auto needed = static_cast<size_t>(t.storage_offset() + t.numel()) * t.element_size();
    require(t.numel() == 0 || (t.has_storage() && t.storage().nbytes() >= needed), ErrorCode::kInvalidArgument,
            what + ": the model's parameters are sharded across ranks by a trainer with data_parallel \"fsdp\" (" +
                p.name + " holds no data between steps); detach the trainer's process group to gather them first");
  }
}

at::Tensor Model::forward(const at::Tensor& input_ids, int64_t logits_to_keep, const at::Tensor& cu_doc_lens,
                          int64_t max_doc_len) const {
  require_materialized("forward");
  auto ids = checked_tokens(input_ids, "input_ids", std::nullopt);
  auto doc_positions = checked_doc_positions(ids, cu_doc_lens, max_doc_len);
  require(logits_to_keep >= 0 && logits_to_keep <= ids.size(1), ErrorCode::kInvalidArgument,
          "logits_to_keep must be in [0, seq_len=" + std::to_string(ids.size(1)) + "] (got " +
              std::to_string(logits_to_keep) + ")");
  c10::InferenceMode guard;
  return module_->forward(ids, logits_to_keep, nullptr, doc_positions).to(at::kFloat);
}

nn::LossOutput Model::loss(const at::Tensor& input_ids, const at::Tensor& labels,
                           const nn::LossOptions& options, const at::Tensor& cu_doc_lens,
                           int64_t max_doc_len) const {
  require_materialized("loss");
  auto ids = checked_tokens(input_ids, "input_ids", std::nullopt);
  auto doc_positions = checked_doc_positions(ids, cu_doc_lens, max_doc_len);
  auto targets = checked_tokens(labels, "labels", options.ignore_index);
  require(ids.sizes() == targets.sizes(), ErrorCode::kInvalidArgument,
          "labels: shape " + shape_string(targets.sizes()) + " differs from input_ids shape " +
              shape_string(ids.sizes()));
  require(options.logits_to_keep >= 0 && options.logits_to_keep <= ids.size(1),
          ErrorCode::kInvalidArgument,
          "logits_to_keep must be in [0, seq_len=" + std::to_string(ids.size(1)) + "] (got " +
              std::to_string(options.logits_to_keep) + ")");
  require(options.loss_div_factor != 0.0 && std::isfinite(options.loss_div_factor),
          ErrorCode::kInvalidArgument, "loss_div_factor must be a non-zero finite number");
  c10::InferenceMode guard;
  auto out = module_->loss(ids, targets, options, doc_positions);
  if (out.logits) out.logits = out.logits->to(at::kFloat);
  return out;
}

void Model::load_safetensors(const std::string& path) {
  require_materialized("load_safetensors");
  io::SafetensorsFile file(path);
  std::map<std::string, const io::SafetensorsEntry*> by_name;
  for (const auto& e : file.entries()) by_name[e.name] = &e;

  auto params = module_->named_state();
  std::set<std::string> expected;
  for (const auto& p : params) expected.insert(p.name);
  // Tied embeddings: OLMo-core's state dict names the shared table twice; the second name is
  // optional here and must hold the same values.
  const bool tied = config_.spec().tie_word_embeddings;
  const std::string tied_name = "lm_head.w_out.weight";
  if (tied) expected.insert(tied_name);
  for (const auto& e : file.entries()) {
    require(expected.count(e.name) > 0, ErrorCode::kMismatch,
            "safetensors file '" + path + "': unexpected tensor '" + e.name +
                "' (not a parameter of this model; is the file for another config?)");
  }
  // Read and convert everything first, so a bad file leaves the model untouched.
  std::vector<at::Tensor> staged;
  staged.reserve(params.size());
  for (const auto& p : params) {
    auto it = by_name.find(p.name);
    require(it != by_name.end(), ErrorCode::kMismatch,
            "safetensors file '" + path + "': tensor '" + p.name + "' is missing");
    const auto& entry = *it->second;
    require(at::IntArrayRef(entry.shape) == p.tensor->sizes(), ErrorCode::kMismatch,
            "safetensors file '" + path + "': tensor '" + p.name + "' has shape " +
                shape_string(entry.shape) + " but the model expects " +
                shape_string(p.tensor->sizes()));
    require(at::isFloatingType(entry.dtype), ErrorCode::kMismatch,
            "safetensors file '" + path + "': tensor '" + p.name + "' has non-floating dtype " +
                c10::toString(entry.dtype));
    staged.push_back(file.read(entry).to(p.tensor->scalar_type()));
  }
  if (tied && by_name.count(tied_name)) {
    const auto& entry = *by_name[tied_name];
    const at::Tensor& table = staged.front();  // embeddings.weight is the first parameter
    require(params.front().name == "embeddings.weight" && at::IntArrayRef(entry.shape) == table.sizes() &&
                file.read(entry).to(table.scalar_type()).equal(table),
            ErrorCode::kMismatch,
            "safetensors file '" + path + "': tensor '" + tied_name +
                "' differs from 'embeddings.weight' but the config ties them (tie_word_embeddings)");
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].tensor->copy_(staged[i]);
}

void Model::save_safetensors(const std::string& path) const {
  require_materialized("save_safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& p : module_->named_state()) tensors.emplace_back(p.name, *p.tensor);
  // Tied: written under both names, as OLMo-core's state dict lists them, so either side loads
  // the file with its usual names.
  if (config_.spec().tie_word_embeddings) tensors.emplace_back("lm_head.w_out.weight", module_->embeddings());
  io::save_safetensors(path, tensors);
}

}  // namespace olm
