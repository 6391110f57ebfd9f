#include "capi/capi.h"
#include "core/run/run.h"
#include "core/train/evaluate.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::init_options;
using olm::capi::read_options;
using olm::capi::require_arg;

struct olm_dataset {
  std::shared_ptr<olm::data::TokenDataset> dataset;
};

namespace {

void dataset_defaults(olm_dataset_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_dataset_options);
  options->sequence_length = 0;
  options->vocab_size = 0;
  options->eos_token_id = -1;
  options->masked_token_ids = nullptr;
  options->num_masked_token_ids = 0;
  options->raw_dtype = "uint16";
}

olm::data::DatasetOptions to_core(const olm_dataset_options* user) {
  require_arg(user, "options");
  const auto o = read_options(user, dataset_defaults, "options");
  olm::data::DatasetOptions out;
  out.sequence_length = o.sequence_length;
  out.vocab_size = o.vocab_size;
  if (o.eos_token_id != -1) out.eos_token_id = o.eos_token_id;
  require(o.num_masked_token_ids == 0 || o.masked_token_ids != nullptr, ErrorCode::kInvalidArgument,
          "options.masked_token_ids: NULL with num_masked_token_ids > 0");
  require(o.num_masked_token_ids <= (1u << 20), ErrorCode::kInvalidArgument,
          "options.num_masked_token_ids: too many");
  out.masked_token_ids.assign(o.masked_token_ids, o.masked_token_ids + o.num_masked_token_ids);
  if (o.raw_dtype) out.raw_dtype = o.raw_dtype;
  return out;
}

olm_eval_metrics to_c(const olm::train::EvalMetrics& m) {
  olm_eval_metrics out{};
  out.struct_size = sizeof(olm_eval_metrics);
  out.loss = m.loss;
  out.perplexity = m.perplexity;
  out.tokens = m.tokens;
  return out;
}

}  // namespace

extern "C" {


void olm_dataset_options_init_sized(olm_dataset_options* options, size_t struct_size) {
  init_options(options, struct_size, dataset_defaults);
}

void(olm_dataset_options_init)(olm_dataset_options* options) { init_options(options, sizeof *options, dataset_defaults); }

olm_error* olm_dataset_from_files(const char* const* paths, size_t num_paths, const olm_dataset_options* options,
                                  olm_dataset** out) {
  OLM_API_BEGIN
  require_arg(paths, "paths");
  require_arg(out, "out");
  require(num_paths > 0, ErrorCode::kInvalidArgument, "num_paths: at least one file is required");
  std::vector<std::string> files;
  for (size_t i = 0; i < num_paths; ++i) {
    require(paths[i] != nullptr, ErrorCode::kInvalidArgument, "paths[" + std::to_string(i) + "]: NULL");
    files.emplace_back(paths[i]);
  }
  *out = new olm_dataset{olm::data::TokenDataset::from_files(files, to_core(options))};
  OLM_API_END
}

olm_error* olm_dataset_from_tokens(const int64_t* tokens, size_t num_tokens, const olm_dataset_options* options,
                                   olm_dataset** out) {
  OLM_API_BEGIN
  require_arg(tokens, "tokens");
  require_arg(out, "out");
  std::vector<int64_t> copy(tokens, tokens + num_tokens);
  *out = new olm_dataset{olm::data::TokenDataset::from_tokens(std::move(copy), to_core(options))};
  OLM_API_END
}

olm_error* olm_dataset_size(const olm_dataset* dataset, int64_t* num_tokens, int64_t* num_instances) {
  OLM_API_BEGIN
  require_arg(dataset, "dataset");
  if (num_tokens) *num_tokens = dataset->dataset->num_tokens();
  if (num_instances) *num_instances = dataset->dataset->num_instances();
  OLM_API_END
}

olm_error* olm_dataset_batch(const olm_dataset* dataset, const int64_t* indices, size_t num_indices, olm_batch* out) {
  OLM_API_BEGIN
  require_arg(dataset, "dataset");
  require_arg(indices, "indices");
  require_arg(out, "out");
  require(out->struct_size >= offsetof(olm_batch, labels), ErrorCode::kInvalidArgument,
          "out->struct_size is " + std::to_string(out->struct_size) + ": set it to sizeof(olm_batch)");
  require(num_indices > 0, ErrorCode::kInvalidArgument, "num_indices must be positive");
  const int64_t n = dataset->dataset->num_instances();
  for (size_t i = 0; i < num_indices; ++i)
    require(indices[i] >= 0 && indices[i] < n, ErrorCode::kInvalidArgument,
            "indices[" + std::to_string(i) + "]: " + std::to_string(indices[i]) + " is outside [0, " +
                std::to_string(n) + ")");
  auto batch = olm::data::make_batch(*dataset->dataset, std::vector<int64_t>(indices, indices + num_indices));
  olm_batch full{};
  full.struct_size = sizeof(olm_batch);
  const size_t size = out->struct_size;
  auto fits = [&](size_t offset) { return offset + sizeof(olm_tensor*) <= size; };
  if (fits(offsetof(olm_batch, input_ids))) full.input_ids = new olm_tensor{batch.input_ids};
  if (fits(offsetof(olm_batch, labels))) full.labels = new olm_tensor{batch.labels};
  if (batch.cu_doc_lens && fits(offsetof(olm_batch, cu_doc_lens))) full.cu_doc_lens = new olm_tensor{*batch.cu_doc_lens};
  full.max_doc_len = batch.max_doc_len;
  olm::capi::write_result(out, full);
  OLM_API_END
}

void olm_batch_free(olm_batch* batch) {
  if (!batch) return;
  const size_t size = batch->struct_size;
  auto release = [&](olm_tensor*& slot, size_t offset) {
    if (offset + sizeof(olm_tensor*) <= size) {
      delete slot;
      slot = nullptr;
    }
  };
  release(batch->input_ids, offsetof(olm_batch, input_ids));
  release(batch->labels, offsetof(olm_batch, labels));
  release(batch->cu_doc_lens, offsetof(olm_batch, cu_doc_lens));
}

void olm_dataset_free(olm_dataset* dataset) { delete dataset; }

static void fit_defaults(olm_fit_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_fit_options);
  options->eval_data = nullptr;
  options->on_step = nullptr;
  options->on_log = nullptr;
  options->user_data = nullptr;
  options->document_masking = -1;
}

void olm_fit_options_init_sized(olm_fit_options* options, size_t struct_size) {
  init_options(options, struct_size, fit_defaults);
}

void(olm_fit_options_init)(olm_fit_options* options) { init_options(options, sizeof *options, fit_defaults); }

olm_error* olm_trainer_fit(olm_trainer* trainer, const olm_dataset* train_data, const olm_fit_options* options,
                           olm_eval_metrics* out) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  if (out) olm::capi::require_result(out, "out");
  const auto opts = read_options(options, fit_defaults, "options");
  auto& t = *trainer->trainer;
  const auto& spec = t.config().spec();
  olm::run::FitOptions fit;
  if (train_data) {
    require(train_data->dataset->options().sequence_length == spec.sequence_length, ErrorCode::kInvalidArgument,
            "train_data: sequence_length " + std::to_string(train_data->dataset->options().sequence_length) +
                " differs from the train config's " + std::to_string(spec.sequence_length));
    fit.train_data = train_data->dataset;
  }
  if (opts.eval_data) fit.eval_data = opts.eval_data->dataset;
  require(opts.document_masking >= -1 && opts.document_masking <= 1, ErrorCode::kInvalidArgument,
          "options.document_masking must be -1, 0 or 1 (got " + std::to_string(opts.document_masking) + ")");
  if (opts.document_masking != -1) fit.documents = opts.document_masking == 1;
  if (opts.on_step) {
    fit.callbacks.on_step = [&](const olm::train::StepMetrics& m) {
      const auto c = olm::capi::step_metrics_to_c(m);
      return opts.on_step(&c, opts.user_data) == 0;
    };
  }
  if (opts.on_log) {
    fit.callbacks.on_log = [&](const std::string& message) { opts.on_log(message.c_str(), opts.user_data); };
  }
  const auto result = olm::run::fit(t, fit);
  if (out) {
    olm_eval_metrics metrics{};
    metrics.struct_size = sizeof(olm_eval_metrics);
    if (result.last_eval) metrics = to_c(*result.last_eval);
    olm::capi::write_result(out, metrics);
  }
  OLM_API_END
}

olm_error* olm_trainer_evaluate(olm_trainer* trainer, const olm_dataset* data, int64_t max_batches,
                                olm_eval_metrics* out) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  require_arg(data, "data");
  olm::capi::require_result(out, "out");
  require(max_batches >= 0, ErrorCode::kInvalidArgument, "max_batches must be >= 0");
  auto& t = *trainer->trainer;
  const auto m = olm::train::evaluate_dataset(t, *data->dataset, t.config().spec().global_batch_instances(),
                                              max_batches, olm::train::eval_documents(t.config().spec()));
  olm::capi::write_result(out, to_c(m));
  OLM_API_END
}

}  // extern "C"
