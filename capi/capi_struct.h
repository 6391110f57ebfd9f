// The fields of every option and result struct of olm.h, listed in order, so the library
// reads and writes a caller's struct one whole field at a time: a field is read (options) or
// written (results) only when it lies entirely inside the caller's struct_size. A field that
// a struct_size covers only in part is neither read nor written.
//
// The smallest struct_size accepted is the end of the first field after struct_size (a
// struct that carries nothing is a mistake, never an older caller); smaller sizes, 0
// included, are refused naming `<argument>.struct_size` (options) or `<argument>->struct_size`
// (results).
#pragma once
#include <cstddef>
#include <cstring>

#include "core/train/step_metrics.h"
#include "olm.h"

namespace olm::capi {

struct FieldSpan {
  size_t offset;
  size_t size;
};

template <class T>
struct StructFields;  // specialized below for every struct with a struct_size

#define OLM_FIELD(T, f) FieldSpan{offsetof(T, f), sizeof(static_cast<T*>(nullptr)->f)}
#define OLM_STRUCT_FIELDS(T, ...)                                                     \
  template <>                                                                         \
  struct StructFields<T> {                                                            \
    static constexpr const char* name = #T;                                           \
    static constexpr FieldSpan fields[] = {__VA_ARGS__};                              \
  };

#define F(f) OLM_FIELD(olm_model_options, f)
OLM_STRUCT_FIELDS(olm_model_options, F(param_dtype), F(init_weights))
#undef F
#define F(f) OLM_FIELD(olm_forward_options, f)
OLM_STRUCT_FIELDS(olm_forward_options, F(logits_to_keep), F(cu_doc_lens), F(max_doc_len))
#undef F
#define F(f) OLM_FIELD(olm_loss_options, f)
OLM_STRUCT_FIELDS(olm_loss_options, F(ignore_index), F(loss_reduction), F(z_loss_multiplier), F(loss_div_factor),
                  F(return_logits), F(logits_to_keep), F(cu_doc_lens), F(max_doc_len))
#undef F
#define F(f) OLM_FIELD(olm_loss_result, f)
OLM_STRUCT_FIELDS(olm_loss_result, F(loss), F(ce_loss), F(z_loss), F(logits), F(loss_value), F(ce_loss_value),
                  F(z_loss_value), F(lb_loss), F(router_z_loss), F(lb_loss_value), F(router_z_loss_value))
#undef F
#define F(f) OLM_FIELD(olm_parameter_info, f)
OLM_STRUCT_FIELDS(olm_parameter_info, F(name), F(dtype), F(ndim), F(shape), F(trainable))
#undef F
#define F(f) OLM_FIELD(olm_generate_options, f)
OLM_STRUCT_FIELDS(olm_generate_options, F(max_new_tokens), F(temperature), F(top_k), F(top_p), F(seed),
                  F(stop_tokens), F(num_stop_tokens), F(on_token), F(user_data), F(use_kv_cache))
#undef F
#define F(type, f, doc) OLM_FIELD(olm_step_metrics, f),
OLM_STRUCT_FIELDS(olm_step_metrics, OLM_STEP_METRICS(F) OLM_STEP_METRICS_COMM(F))
#undef F
#define F(f) OLM_FIELD(olm_dataset_options, f)
OLM_STRUCT_FIELDS(olm_dataset_options, F(sequence_length), F(vocab_size), F(eos_token_id), F(masked_token_ids),
                  F(num_masked_token_ids), F(raw_dtype))
#undef F
#define F(f) OLM_FIELD(olm_batch, f)
OLM_STRUCT_FIELDS(olm_batch, F(input_ids), F(labels), F(cu_doc_lens), F(max_doc_len))
#undef F
#define F(f) OLM_FIELD(olm_eval_metrics, f)
OLM_STRUCT_FIELDS(olm_eval_metrics, F(loss), F(perplexity), F(tokens))
#undef F
#define F(f) OLM_FIELD(olm_fit_options, f)
OLM_STRUCT_FIELDS(olm_fit_options, F(eval_data), F(on_step), F(on_log), F(user_data), F(document_masking))
#undef F
#define F(f) OLM_FIELD(olm_dist_options, f)
OLM_STRUCT_FIELDS(olm_dist_options, F(backend), F(device), F(rank), F(world_size), F(local_rank),
                  F(local_world_size), F(master_addr), F(master_port), F(timeout_seconds))
#undef F
#define F(f) OLM_FIELD(olm_dist_info, f)
OLM_STRUCT_FIELDS(olm_dist_info, F(rank), F(world_size), F(local_rank), F(local_world_size), F(backend),
                  F(collectives), F(bytes))
#undef F
#define F(f) OLM_FIELD(olm_trainer_layout, f)
OLM_STRUCT_FIELDS(olm_trainer_layout, F(data_parallel_rank), F(data_parallel_size), F(tensor_parallel_rank),
                  F(tensor_parallel_size), F(context_parallel_rank), F(context_parallel_size))
#undef F
#define F(f) OLM_FIELD(olm_hf_load_options, f)
OLM_STRUCT_FIELDS(olm_hf_load_options, F(dtype), F(device))
#undef F
#define F(f) OLM_FIELD(olm_hf_save_options, f)
OLM_STRUCT_FIELDS(olm_hf_save_options, F(max_shard_bytes), F(tokenizer_source_dir), F(dtype), F(bos_token_id),
                  F(eos_token_id))
#undef F
#undef OLM_STRUCT_FIELDS
#undef OLM_FIELD

// A list that forgets a field appended to its struct fails to compile: the fields follow each
// other in order after struct_size, and the last one ends where the struct does (up to its
// alignment padding).
template <class T>
constexpr bool fields_are_complete() {
  size_t end = sizeof(size_t);
  for (const auto& f : StructFields<T>::fields) {
    if (f.offset < end) return false;
    end = f.offset + f.size;
  }
  return (end + alignof(T) - 1) / alignof(T) * alignof(T) == sizeof(T);
}

// The smallest struct_size accepted: it covers the first field after struct_size.
template <class T>
constexpr size_t min_struct_size() {
  return StructFields<T>::fields[0].offset + StructFields<T>::fields[0].size;
}

// Copies the fields of `src` that lie entirely within `size` bytes into `dst`.
template <class T>
void copy_fields(T* dst, const T* src, size_t size) {
  static_assert(fields_are_complete<T>(), "StructFields<T> does not list every field of T");
  for (const auto& f : StructFields<T>::fields) {
    if (f.offset + f.size > size) break;
    std::memcpy(reinterpret_cast<char*>(dst) + f.offset, reinterpret_cast<const char*>(src) + f.offset, f.size);
  }
}

}  // namespace olm::capi
