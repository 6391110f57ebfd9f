/*
 * olm.h - the C ABI of libolm: transformer language models on LibTorch.
 *
 * Conventions (the full rules are in docs/design.md; usage in README.md):
 *  - Every fallible function returns an `olm_error*`. NULL means success. On error the
 *    out parameters are left untouched and the caller owns the returned error, which it
 *    releases with olm_error_free().
 *  - Objects are opaque handles created by olm_<type>_create / _from_* and released by
 *    olm_<type>_free, which accepts NULL. Objects that depend on others keep them alive
 *    internally, so handles may be freed in any order.
 *  - Option structs begin with `size_t struct_size`; fill them with olm_<x>_options_init()
 *    and then change the fields you need. The library reads only the fields that fit in
 *    the caller's struct_size, so programs built against an older header keep working.
 *    Result structs (olm_loss_result, olm_step_metrics, ...) also begin with struct_size,
 *    which the caller sets (to sizeof the struct) before the call. The exact rule, for
 *    option and result structs alike:
 *      - A field is read (options) or written (results) only when it lies entirely within
 *        the caller's struct_size. A field that struct_size covers only in part is neither
 *        read (it keeps its default) nor written.
 *      - Smaller than this library's struct (an older caller): the fields that fit are read
 *        or written, the others take their defaults (options) or are not reported (results).
 *      - Equal: every field.
 *      - Larger (a newer caller): every field this library knows; the bytes past its own
 *        struct are neither read nor written.
 *      - Refused with OLM_ERR_INVALID_ARGUMENT naming `<argument>.struct_size` (options) or
 *        `<argument>->struct_size` (results), with nothing written: a
 *        struct_size that does not cover the struct's first field after struct_size, 0
 *        included.
 *      - A result function never changes the caller's struct_size, and writes nothing on
 *        error. olm_<x>_options_init_sized() writes the defaults by the same rule, sets
 *        struct_size to the smaller of its argument and the library's size, and writes
 *        nothing when its argument is smaller than a size_t.
 *  - Messages: an error message is one line of text. Bytes it quotes from the caller's
 *    input are kept, except a NUL byte, which is written as the two characters "\0" so the
 *    message is never cut short.
 *  - Strings are UTF-8 and NUL-terminated. Strings returned by the library are borrowed
 *    from the object that returned them and stay valid until that object is freed.
 *  - Threads: a single handle must not be used from two threads at once; different
 *    handles may be used concurrently from different threads.
 *  - No C++ exception, signal or undefined behaviour crosses this boundary: bad input
 *    produces an error whose message names the offending argument or config field.
 */
#ifndef OLM_H
#define OLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define OLM_API __declspec(dllexport)
#else
#define OLM_API __attribute__((visibility("default")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define OLM_MUST_USE __attribute__((warn_unused_result))
#else
#define OLM_MUST_USE
#endif

/* ------------------------------------------------------------------------------------ */
/* Versions                                                                              */
/* ------------------------------------------------------------------------------------ */

#define OLM_VERSION_MAJOR 0
#define OLM_VERSION_MINOR 1
#define OLM_VERSION_PATCH 0

/**
 * The library's version as "MAJOR.MINOR.PATCH".
 *
 * @return A static string owned by the library; never NULL.
 */
OLM_API const char* olm_version(void);

/* ------------------------------------------------------------------------------------ */
/* Errors                                                                                */
/* ------------------------------------------------------------------------------------ */

/** An error: a code and a message. Owned by the caller; release with olm_error_free(). */
typedef struct olm_error olm_error;

/** Error codes returned by olm_error_code(). New codes are only ever appended. */
typedef int32_t olm_error_code_t;
#define OLM_OK 0
/** An argument is NULL, out of range, or of the wrong dtype or shape. */
#define OLM_ERR_INVALID_ARGUMENT 1
/** A configuration is well-formed but impossible (the message names the field). */
#define OLM_ERR_INVALID_CONFIG 2
/** JSON, FlatBuffers or safetensors input could not be parsed or verified. */
#define OLM_ERR_PARSE 3
/** A file could not be opened, read, written or renamed. */
#define OLM_ERR_IO 4
/** Host or device memory ran out, or a requested size would not fit. */
#define OLM_ERR_OUT_OF_MEMORY 5
/** The requested device (for example "cuda") is not available. */
#define OLM_ERR_DEVICE_UNAVAILABLE 6
/** A file holds tensors that do not match the model (names, shapes or dtypes). */
#define OLM_ERR_MISMATCH 7
/** An unexpected failure inside the library; the message says what happened. */
#define OLM_ERR_INTERNAL 8
/** A process group failed: a rank never arrived, died or left, or a collective timed out
 *  (the message names the ranks). */
#define OLM_ERR_DISTRIBUTED 9

/**
 * The code of an error.
 *
 * @param error An error, or NULL.
 * @return One of the OLM_ERR_* codes; OLM_OK when error is NULL.
 */
OLM_API olm_error_code_t olm_error_code(const olm_error* error);

/**
 * The message of an error.
 *
 * @param error An error, or NULL.
 * @return A NUL-terminated UTF-8 string borrowed from the error (valid until
 *         olm_error_free); an empty string when error is NULL.
 */
OLM_API const char* olm_error_message(const olm_error* error);

/**
 * Release an error.
 *
 * @param error An error returned by any olm function, or NULL (no-op).
 */
OLM_API void olm_error_free(olm_error* error);

/* ------------------------------------------------------------------------------------ */
/* Byte buffers                                                                          */
/* ------------------------------------------------------------------------------------ */

/** A library-owned byte buffer (serialized configs). Release with olm_buffer_free(). */
typedef struct olm_buffer olm_buffer;

/**
 * The bytes of a buffer.
 *
 * @param buffer A buffer, or NULL.
 * @return A pointer to olm_buffer_size() bytes, borrowed from the buffer; NULL when buffer
 *         is NULL. JSON text is also NUL-terminated (the NUL is not counted in the size).
 */
OLM_API const uint8_t* olm_buffer_data(const olm_buffer* buffer);

/**
 * The number of bytes in a buffer.
 *
 * @param buffer A buffer, or NULL.
 * @return The size in bytes; 0 when buffer is NULL.
 */
OLM_API size_t olm_buffer_size(const olm_buffer* buffer);

/**
 * Release a buffer.
 *
 * @param buffer A buffer, or NULL (no-op).
 */
OLM_API void olm_buffer_free(olm_buffer* buffer);

/* ------------------------------------------------------------------------------------ */
/* Model configurations                                                                  */
/* ------------------------------------------------------------------------------------ */

/**
 * A validated transformer configuration (schema/olm.fbs, table TransformerConfig).
 * Immutable once created. Release with olm_config_free().
 */
typedef struct olm_config olm_config;

/**
 * Build one of OLMo-core's preset configurations.
 *
 * Known names: olmo2_1M, olmo2_14M, olmo2_30M, olmo2_60M, olmo2_100M, olmo2_190M,
 * olmo2_370M, olmo2_600M, olmo2_760M, olmo2_1B, olmo2_1B_v2, olmo2_3B, olmo2_7B,
 * olmo2_13B, olmo2_32B, llama2_271M, llama2_1B, llama2_7B, llama2_13B, llama2_26B,
 * llama2_70B, llama3_1B, llama3_8B, llama3_70B, llama3_405B, and the mixtures of experts
 * smallmoe and olmoe_1B_7B.
 *
 * @param name The preset name (see above).
 * @param vocab_size The vocabulary size, > 0.
 * @param out On success, receives a new config owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for a NULL or unknown name (the
 *         message lists the known names) or a non-positive vocab_size.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_from_preset(const char* name, int64_t vocab_size,
                                                       olm_config** out);

/**
 * Parse and validate a JSON configuration (the JSON form of schema/olm.fbs).
 *
 * Unknown fields, wrong types and impossible values are errors.
 *
 * @param text UTF-8 JSON text; need not be NUL-terminated.
 * @param len The number of bytes of text.
 * @param out On success, receives a new config owned by the caller.
 * @return NULL on success; OLM_ERR_PARSE for malformed JSON, unknown fields or wrong
 *         types; OLM_ERR_INVALID_CONFIG for an impossible configuration (the message names
 *         the field); OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_from_json(const char* text, size_t len,
                                                     olm_config** out);

/**
 * Verify and validate a binary FlatBuffers configuration (file identifier "OLMC").
 *
 * @param data The buffer's bytes; copied, so the caller may release them afterwards.
 * @param len The number of bytes.
 * @param out On success, receives a new config owned by the caller.
 * @return NULL on success; OLM_ERR_PARSE when the buffer fails verification or carries
 *         the wrong file identifier; OLM_ERR_INVALID_CONFIG for an impossible configuration.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_from_flatbuffer(const void* data, size_t len,
                                                           olm_config** out);

/**
 * Serialize a configuration as JSON text.
 *
 * @param config The config.
 * @param out On success, receives a new buffer (JSON, NUL-terminated) owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_to_json(const olm_config* config, olm_buffer** out);

/**
 * Serialize a configuration as a binary FlatBuffer (file identifier "OLMC").
 *
 * @param config The config.
 * @param out On success, receives a new buffer owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_to_flatbuffer(const olm_config* config,
                                                         olm_buffer** out);

/**
 * The number of parameters a model built from this config has, counted as OLMo-core's
 * TransformerConfig.num_params and num_non_embedding_params count them.
 *
 * @param config The config.
 * @param total Receives the total parameter count (may be NULL).
 * @param non_embedding Receives the count without the embedding table (may be NULL).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT when config is NULL.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_num_params(const olm_config* config, int64_t* total,
                                                      int64_t* non_embedding);

/**
 * The idealized training FLOPs per token at a sequence length, as OLMo-core's
 * Transformer.num_flops_per_token computes them (6 per parameter plus attention).
 *
 * @param config The config.
 * @param seq_len The sequence length, > 0.
 * @param flops Receives the FLOPs per token.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or seq_len <= 0.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_num_flops_per_token(const olm_config* config,
                                                               int64_t seq_len, int64_t* flops);

/**
 * The number of parameters one token uses, counted as OLMo-core's
 * TransformerConfig.num_active_params and num_active_non_embedding_params count them: an MoE
 * block counts top_k of its num_experts experts. Equal to olm_config_num_params() for dense
 * models.
 *
 * @param config The config.
 * @param active Receives the active parameter count (may be NULL).
 * @param active_non_embedding Receives it without the embedding table (may be NULL).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT when config is NULL.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_num_active_params(const olm_config* config,
                                                             int64_t* active,
                                                             int64_t* active_non_embedding);

/**
 * Release a config. Models built from it keep their own copy.
 *
 * @param config A config, or NULL (no-op).
 */
OLM_API void olm_config_free(olm_config* config);

/* ------------------------------------------------------------------------------------ */
/* Tensors                                                                               */
/* ------------------------------------------------------------------------------------ */

/** Element types. Values are fixed forever. */
typedef int32_t olm_dtype;
#define OLM_DTYPE_INT32 0
#define OLM_DTYPE_INT64 1
#define OLM_DTYPE_FLOAT32 2
#define OLM_DTYPE_BFLOAT16 3
#define OLM_DTYPE_FLOAT16 4

/** The most dimensions a tensor may have. */
#define OLM_MAX_DIMS 8

/** A dense tensor (on the host or a device). Release with olm_tensor_free(). */
typedef struct olm_tensor olm_tensor;

/**
 * Create a host tensor by copying from host memory.
 *
 * @param dtype One of the OLM_DTYPE_* values.
 * @param shape ndim sizes, each >= 0; may be NULL when ndim is 0 (a scalar).
 * @param ndim The number of dimensions, 0..OLM_MAX_DIMS.
 * @param data Row-major elements; copied. May be NULL only when the tensor is empty.
 * @param data_size The number of bytes at data; must equal the product of the shape times
 *        the element size.
 * @param out On success, receives a new tensor owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for an unknown dtype, a negative size,
 *         too many dimensions, a size overflow or a data_size mismatch (the message gives
 *         both sizes).
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_create(olm_dtype dtype, const int64_t* shape,
                                                  size_t ndim, const void* data,
                                                  size_t data_size, olm_tensor** out);

/**
 * The element type of a tensor.
 *
 * @param tensor The tensor.
 * @param out Receives the OLM_DTYPE_* value.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_dtype(const olm_tensor* tensor, olm_dtype* out);

/**
 * The number of dimensions of a tensor.
 *
 * @param tensor The tensor.
 * @param out Receives the number of dimensions.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_ndim(const olm_tensor* tensor, size_t* out);

/**
 * The shape of a tensor.
 *
 * @param tensor The tensor.
 * @param shape Receives olm_tensor_ndim() sizes.
 * @param capacity The number of elements shape can hold; must be >= the tensor's ndim.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or a too small
 *         capacity.
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_shape(const olm_tensor* tensor, int64_t* shape,
                                                 size_t capacity);

/**
 * The number of bytes the tensor's elements occupy (numel times element size).
 *
 * @param tensor The tensor.
 * @param out Receives the byte count.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_nbytes(const olm_tensor* tensor, size_t* out);

/**
 * Copy a tensor's elements, row-major, into host memory (from any device).
 *
 * @param tensor The tensor.
 * @param dst Destination host memory.
 * @param dst_size The number of bytes at dst; must be >= olm_tensor_nbytes().
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or a too small
 *         dst_size (nothing is written then).
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_copy_to_host(const olm_tensor* tensor, void* dst,
                                                        size_t dst_size);

/**
 * Release a tensor.
 *
 * @param tensor A tensor, or NULL (no-op).
 */
OLM_API void olm_tensor_free(olm_tensor* tensor);

/* ------------------------------------------------------------------------------------ */
/* Devices                                                                               */
/* ------------------------------------------------------------------------------------ */

/**
 * The number of CUDA devices this process can use.
 *
 * @return 0 when CUDA is not available (no GPU, no driver, or a CPU-only build).
 */
OLM_API int32_t olm_cuda_device_count(void);

/* ------------------------------------------------------------------------------------ */
/* Models                                                                                */
/* ------------------------------------------------------------------------------------ */

/** A transformer language model. Release with olm_model_free(). */
typedef struct olm_model olm_model;

/** Options for olm_model_create(). Fill with olm_model_options_init(). */
typedef struct olm_model_options {
    size_t struct_size;
    /** Parameter dtype: -1 (the default) takes the config's dtype; otherwise
     *  OLM_DTYPE_FLOAT32 or OLM_DTYPE_BFLOAT16. */
    olm_dtype param_dtype;
    /** Non-zero (the default) initializes weights with the config's init_method and
     *  init_seed; zero leaves them zero-filled, for callers that load weights next. */
    int32_t init_weights;
} olm_model_options;

/**
 * Fill model options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_model_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_model_options_init_sized(olm_model_options* options, size_t struct_size);
/** Fill model options with their defaults (see olm_model_options_init_sized()). */
#define olm_model_options_init(options) olm_model_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_model_options_init)(olm_model_options* options);

/**
 * Build a model from a config on a device and initialize its weights.
 *
 * @param config The config; the model keeps its own copy.
 * @param device "cpu", "cuda" or "cuda:N".
 * @param options Options, or NULL for the defaults.
 * @param out On success, receives a new model owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, a malformed device
 *         string or a bad option; OLM_ERR_DEVICE_UNAVAILABLE when CUDA (or device N) is not
 *         available; OLM_ERR_OUT_OF_MEMORY when the parameters would not fit in memory.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_create(const olm_config* config, const char* device,
                                                 const olm_model_options* options,
                                                 olm_model** out);

/** Options for olm_model_forward(). Fill with olm_forward_options_init(). */
typedef struct olm_forward_options {
    size_t struct_size;
    /** Keep only the logits of the last N positions; 0 (the default) keeps all. */
    int64_t logits_to_keep;
    /** Intra-document masking (OLMo-core's cu_doc_lens): NULL (the default) for none, else a
     *  1-D int32 or int64 tensor of cumulative document lengths over the flattened
     *  (batch, seq_len) tokens: it starts at 0, never decreases, ends at batch * seq_len and
     *  holds every multiple of seq_len (documents do not cross rows), as olm_batch's
     *  cu_doc_lens. Tokens attend only to earlier tokens of their own document and RoPE
     *  positions restart at 0 in each document, so every document's logits equal those of a
     *  separate forward over it. Not owned: the library only reads it during the call. */
    const olm_tensor* cu_doc_lens;
    /** With cu_doc_lens: 0 (the default), or an upper bound on the longest document (as
     *  olm_batch's max_doc_len); a smaller value is an error. Ignored without cu_doc_lens. */
    int64_t max_doc_len;
} olm_forward_options;

/**
 * Fill forward options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_forward_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_forward_options_init_sized(olm_forward_options* options, size_t struct_size);
/** Fill forward options with their defaults (see olm_forward_options_init_sized()). */
#define olm_forward_options_init(options) olm_forward_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_forward_options_init)(olm_forward_options* options);

/**
 * Run the model on token ids and return the logits.
 *
 * Runs in evaluation mode, always: no dropout (attention and residual dropout are off), no MoE
 * router jitter, no autograd graph, and nothing in the model changes (an MoE router's expert
 * loads are not counted toward its score_bias update). Only the optimizer steps of
 * olm_trainer_step(), olm_trainer_step_documents() and olm_trainer_fit() run the model in
 * training mode (with the config's dropout and router jitter); evaluations and
 * olm_model_generate() run in evaluation mode too.
 *
 * @param model The model.
 * @param input_ids Token ids, int32 or int64, shape (batch, seq_len), each in
 *        [0, vocab_size); on any device (moved to the model's device).
 * @param options Options, or NULL for the defaults.
 * @param logits On success, receives a new float32 tensor of shape
 *        (batch, kept positions, vocab_size) on the model's device, owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, a wrong dtype or
 *         shape, a token id outside the vocabulary, a bad logits_to_keep, or a cu_doc_lens
 *         or max_doc_len that breaks the rules above.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_forward(olm_model* model, const olm_tensor* input_ids,
                                                  const olm_forward_options* options,
                                                  olm_tensor** logits);

/** Loss reductions. */
typedef int32_t olm_loss_reduction;
#define OLM_LOSS_REDUCTION_MEAN 0
#define OLM_LOSS_REDUCTION_SUM 1
#define OLM_LOSS_REDUCTION_NONE 2

/** Options for olm_model_loss(). Fill with olm_loss_options_init(). */
typedef struct olm_loss_options {
    size_t struct_size;
    /** Labels equal to this are ignored (default -100). */
    int64_t ignore_index;
    /** OLM_LOSS_REDUCTION_MEAN (default), _SUM or _NONE. */
    olm_loss_reduction loss_reduction;
    /** The z-loss multiplier; 0 (the default) disables the z-loss. */
    double z_loss_multiplier;
    /** OLMo-core's loss_div_factor: every loss (and the MoE losses, see olm_loss_result) is
     *  divided by this. 0 (the default since olm 0.1.1) means unset, OLMo-core's None: loss,
     *  ce_loss and z_loss are not divided and the MoE losses are divided by the number of
     *  input tokens. Any other finite value, 1 included, is the divisor of all of them.
     *  (olm 0.1.0 defaulted to 1 and read 1 as unset; programs that take the default from
     *  olm_loss_options_init keep their results, a program that wrote 1 itself now divides
     *  the MoE losses of an MoE model by exactly 1.) */
    double loss_div_factor;
    /** Non-zero returns the float32 logits in olm_loss_result.logits (default 0). */
    int32_t return_logits;
    /** Compute the loss over the last N positions only; 0 (the default) uses all. */
    int64_t logits_to_keep;
    /** Intra-document masking (OLMo-core's cu_doc_lens): NULL (the default) for none, else a
     *  1-D int32 or int64 tensor of cumulative document lengths over the flattened
     *  (batch, seq_len) tokens: it starts at 0, never decreases, ends at batch * seq_len and
     *  holds every multiple of seq_len (documents do not cross rows), as olm_batch's
     *  cu_doc_lens. Tokens attend only to earlier tokens of their own document and RoPE
     *  positions restart at 0 in each document, so every document's logits equal those of a
     *  separate forward over it. Not owned: the library only reads it during the call. */
    const olm_tensor* cu_doc_lens;
    /** With cu_doc_lens: 0 (the default), or an upper bound on the longest document (as
     *  olm_batch's max_doc_len); a smaller value is an error. Ignored without cu_doc_lens. */
    int64_t max_doc_len;
} olm_loss_options;

/**
 * Fill loss options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_loss_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_loss_options_init_sized(olm_loss_options* options, size_t struct_size);
/** Fill loss options with their defaults (see olm_loss_options_init_sized()). */
#define olm_loss_options_init(options) olm_loss_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_loss_options_init)(olm_loss_options* options);

/**
 * The results of olm_model_loss(). The tensors are owned by the caller; release them all
 * with olm_loss_result_free().
 */
typedef struct olm_loss_result {
    size_t struct_size;
    /** The loss to optimize: ce_loss + z_loss, divided by loss_div_factor. A scalar for
     *  mean and sum reductions, shape (batch, positions) for none. */
    olm_tensor* loss;
    /** The cross-entropy part, shaped like loss. */
    olm_tensor* ce_loss;
    /** The z-loss part, shaped like loss; NULL when the z-loss is disabled. */
    olm_tensor* z_loss;
    /** The float32 logits when requested; NULL otherwise. */
    olm_tensor* logits;
    /** loss, ce_loss and z_loss as numbers for mean and sum reductions (0 for none, and
     *  z_loss_value is 0 when the z-loss is disabled). */
    double loss_value;
    double ce_loss_value;
    double z_loss_value;
    /** MoE models: the routers' load-balancing loss and router z-loss, each already times its
     *  (per-layer) weight and summed over the blocks; scalars for every reduction, not part of
     *  loss (a trainer adds them to what it differentiates). They are divided by
     *  loss_div_factor when it is set (non-zero), else by the number of input tokens. They are
     *  computed in evaluation mode too (see olm_model_loss()). NULL (and the values 0) for
     *  dense models or when the weight is 0 / unset. */
    olm_tensor* lb_loss;
    olm_tensor* router_z_loss;
    double lb_loss_value;
    double router_z_loss_value;
} olm_loss_result;

/**
 * Run the model on token ids and compute the language-modeling loss against labels.
 *
 * Labels are not shifted inside the model: labels[b][t] is the target for position t.
 *
 * Runs in evaluation mode, as olm_model_forward(): no dropout, no MoE router jitter, no autograd
 * graph (the returned tensors carry no gradients), and the model is not changed. For MoE models
 * the routers' load-balancing loss and router z-loss are still computed and returned (in
 * olm_loss_result.lb_loss and router_z_loss, when their weights are set), from the routing the
 * evaluation took; olm_trainer_evaluate() reports the cross-entropy only.
 *
 * @param model The model.
 * @param input_ids Token ids, int32 or int64, shape (batch, seq_len).
 * @param labels Targets, int32 or int64, shape (batch, seq_len); each in [0, vocab_size)
 *        or equal to ignore_index.
 * @param options Options, or NULL for the defaults.
 * @param out The caller's result struct; its struct_size must be set (for example with
 *        sizeof(olm_loss_result)). Filled only on success.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, wrong dtypes or
 *         shapes, out-of-vocabulary ids or labels, an unknown reduction, a non-finite
 *         loss_div_factor, or a bad cu_doc_lens or max_doc_len (see olm_forward_options).
 */
OLM_API OLM_MUST_USE olm_error* olm_model_loss(olm_model* model, const olm_tensor* input_ids,
                                               const olm_tensor* labels,
                                               const olm_loss_options* options,
                                               olm_loss_result* out);

/**
 * Release the tensors held by a loss result and set those fields to NULL.
 *
 * @param result A result, or NULL (no-op).
 */
OLM_API void olm_loss_result_free(olm_loss_result* result);

/**
 * The number of parameters (elements) in a model.
 *
 * @param model The model.
 * @param out Receives the count.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_num_params(const olm_model* model, int64_t* out);

/**
 * Renormalize an nGPT model's embeddings and weight matrices to unit norm, as OLMo-core's
 * NormalizedTransformer.normalize_matrices(). olm_trainer_step() and olm_trainer_fit() do
 * this after every optimizer step; call it yourself after changing weights by other means
 * (an optimizer of your own, a loaded file that was not normalized).
 *
 * @param model A model whose config has name "normalized".
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL or a model that is not
 *         normalized (its weights are left as they are).
 */
OLM_API OLM_MUST_USE olm_error* olm_model_normalize_matrices(olm_model* model);

/**
 * The number of named parameter tensors in a model (OLMo-core state-dict entries).
 *
 * @param model The model.
 * @param out Receives the count.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_parameter_count(const olm_model* model, size_t* out);

/** A description of one parameter tensor. Pointers are borrowed from the model. */
typedef struct olm_parameter_info {
    size_t struct_size;
    /** The OLMo-core state-dict name, e.g. "blocks.0.attention.w_q.weight". */
    const char* name;
    olm_dtype dtype;
    size_t ndim;
    /** ndim sizes. */
    const int64_t* shape;
    /** 0 when the config's freeze_params matches the name: no gradient, no updates. */
    int32_t trainable;
} olm_parameter_info;

/**
 * Describe the parameter at an index, in the model's state-dict order.
 *
 * @param model The model.
 * @param index 0 <= index < olm_model_parameter_count().
 * @param out The caller's struct; its struct_size must be set. The name and shape
 *        pointers stay valid until the model is freed.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or an index out of
 *         range.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_parameter_info(const olm_model* model, size_t index,
                                                         olm_parameter_info* out);

/**
 * Load weights from a safetensors file with OLMo-core state-dict names.
 *
 * Every parameter of the model must be present with the same shape; dtypes are converted.
 * The file is validated completely before any weight changes: on error the model is
 * unchanged.
 *
 * @param model The model.
 * @param path The file's path.
 * @return NULL on success; OLM_ERR_IO when the file cannot be read; OLM_ERR_PARSE for a
 *         malformed or truncated file; OLM_ERR_MISMATCH for missing, unexpected or
 *         wrongly shaped tensors (the message names the tensor).
 */
OLM_API OLM_MUST_USE olm_error* olm_model_load_safetensors(olm_model* model, const char* path);

/**
 * Save the weights to a safetensors file with OLMo-core state-dict names.
 *
 * The file is written to a temporary file in the same directory, flushed to disk and then
 * renamed over path, so path holds either the old or the new file, never a partial one.
 *
 * @param model The model.
 * @param path The file's path.
 * @return NULL on success; OLM_ERR_IO when the file cannot be written.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_save_safetensors(const olm_model* model,
                                                           const char* path);

/**
 * Release a model.
 *
 * @param model A model, or NULL (no-op).
 */
OLM_API void olm_model_free(olm_model* model);

/* ------------------------------------------------------------------------------------ */
/* Generation                                                                            */
/* ------------------------------------------------------------------------------------ */

/**
 * Called with each generated token. Return 0 to continue, non-zero to stop after this token.
 * Must not call back into the same model. Exceptions or longjmp must not escape it.
 */
typedef int32_t (*olm_token_callback)(int64_t token, void* user_data);

/** Options for olm_model_generate(). Fill with olm_generate_options_init(). */
typedef struct olm_generate_options {
    size_t struct_size;
    /** The most tokens to generate (default 32). */
    int64_t max_new_tokens;
    /** Sampling temperature; 0 means greedy decoding (default 1). */
    double temperature;
    /** Sample only among the k most likely tokens; 0 (default) disables. */
    int64_t top_k;
    /** Nucleus sampling: the smallest set of tokens with this much mass; 1 (default) disables. */
    double top_p;
    /** Seed of the sampler's random generator (default 0). */
    uint64_t seed;
    /** Generation ends after one of these tokens is produced; may be NULL. Copied. */
    const int64_t* stop_tokens;
    size_t num_stop_tokens;
    /** Streaming: called for each token as it is produced; may be NULL. */
    olm_token_callback on_token;
    void* user_data;
    /** Non-zero (default) decodes with the KV cache; zero re-runs the whole sequence per token. */
    int32_t use_kv_cache;
} olm_generate_options;

/**
 * Fill generation options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_generate_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_generate_options_init_sized(olm_generate_options* options, size_t struct_size);
/** Fill generation options with their defaults (see olm_generate_options_init_sized()). */
#define olm_generate_options_init(options) olm_generate_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_generate_options_init)(olm_generate_options* options);

/**
 * Generate tokens after a prompt.
 *
 * @param model The model.
 * @param prompt Token ids, int32 or int64, shape (T,) or (1, T), T >= 1, each in
 *        [0, vocab_size); errors about it name `prompt`, errors about options name
 *        `options.<field>`.
 * @param options Options, or NULL for the defaults.
 * @param out On success, receives a new 1-D int64 host tensor with the generated tokens (not
 *        including the prompt), owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, a bad prompt, token
 *         ids outside the vocabulary or bad options (temperature < 0, top_p outside (0, 1]).
 */
OLM_API OLM_MUST_USE olm_error* olm_model_generate(olm_model* model, const olm_tensor* prompt,
                                                   const olm_generate_options* options,
                                                   olm_tensor** out);

/* ------------------------------------------------------------------------------------ */
/* Training                                                                              */
/* ------------------------------------------------------------------------------------ */

/**
 * A validated training configuration (schema/olm.fbs, table TrainConfig; binary buffers carry
 * the file identifier "OLMT"). Immutable. Release with olm_train_config_free().
 */
typedef struct olm_train_config olm_train_config;

/**
 * Parse and validate a JSON training configuration.
 *
 * @param text UTF-8 JSON text; need not be NUL-terminated.
 * @param len The number of bytes of text.
 * @param out On success, receives a new train config owned by the caller.
 * @return NULL on success; OLM_ERR_PARSE for malformed JSON, unknown fields or wrong types;
 *         OLM_ERR_INVALID_CONFIG for impossible values (the message names the field).
 */
OLM_API OLM_MUST_USE olm_error* olm_train_config_from_json(const char* text, size_t len,
                                                           olm_train_config** out);

/**
 * Verify and validate a binary training configuration (identifier "OLMT").
 *
 * @param data The buffer's bytes (copied).
 * @param len The number of bytes.
 * @param out On success, receives a new train config owned by the caller.
 * @return NULL on success; OLM_ERR_PARSE or OLM_ERR_INVALID_CONFIG as for JSON.
 */
OLM_API OLM_MUST_USE olm_error* olm_train_config_from_flatbuffer(const void* data, size_t len,
                                                                 olm_train_config** out);

/**
 * Serialize a training configuration as JSON (NUL-terminated).
 *
 * @param config The train config.
 * @param out On success, receives a new buffer owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_train_config_to_json(const olm_train_config* config,
                                                         olm_buffer** out);

/**
 * Serialize a training configuration as a binary FlatBuffer (identifier "OLMT").
 *
 * @param config The train config.
 * @param out On success, receives a new buffer owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_train_config_to_flatbuffer(const olm_train_config* config,
                                                               olm_buffer** out);

/**
 * The model configuration a training configuration names (its `model` or `model_preset`).
 *
 * @param config The train config.
 * @param out On success, receives a new model config owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT when the train config names no model.
 */
OLM_API OLM_MUST_USE olm_error* olm_train_config_model(const olm_train_config* config,
                                                       olm_config** out);

/**
 * Release a train config.
 *
 * @param config A train config, or NULL (no-op).
 */
OLM_API void olm_train_config_free(olm_train_config* config);

/** A training session over a model: optimizer, scheduler, counters. Release with
 *  olm_trainer_free(). The trainer keeps its model alive and updates its weights in place;
 *  do not use the model from another thread while the trainer works. */
typedef struct olm_trainer olm_trainer;

/** The metrics of one optimizer step. */
typedef struct olm_step_metrics {
    size_t struct_size;
    /** Optimizer steps taken so far, this one included. */
    int64_t step;
    /** ce_loss + z_loss: the mean over the batch's target tokens. */
    double loss;
    double ce_loss;
    double z_loss;
    /** The total gradient norm before clipping. */
    double grad_norm;
    /** The learning rate of the default parameter group for this step. */
    double lr;
    int64_t tokens;
    int64_t tokens_seen;
    double tokens_per_second;
    double step_seconds;
    /** Non-zero when the step was skipped (NaN/Inf loss or gradients, or the skip-step rule):
     *  the parameters were left unchanged. */
    int32_t skipped;
    int64_t skipped_steps;
    /** MoE models: the routers' weighted load-balancing loss and router z-loss over the batch
     *  (summed over blocks, normalized like loss). They are added to what is differentiated but
     *  not to loss, as OLMo-core reports them; 0 for dense models. */
    double lb_loss;
    double router_z_loss;
    /** Bytes this rank all-reduced during the step (gradients, token count, losses); 0
     *  without a process group. */
    int64_t comm_bytes;
    /** Seconds the step waited for the gradient reduction after backward (what backward did
     *  not hide); 0 without a process group. */
    double comm_wait_seconds;
} olm_step_metrics;

/**
 * Create a trainer for a model.
 *
 * @param model The model; kept alive by the trainer.
 * @param config The train config (copied). If it names a model, it must equal the model's.
 * @param out On success, receives a new trainer owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers; OLM_ERR_INVALID_CONFIG
 *         when the train config's model differs from the model's.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_create(olm_model* model,
                                                   const olm_train_config* config,
                                                   olm_trainer** out);

/**
 * Take one optimizer step on a batch, split into micro-batches of rank_microbatch_size
 * tokens whose losses are normalized as OLMo-core does (the summed loss divided by the whole
 * batch's target-token count).
 *
 * @param trainer The trainer.
 * @param input_ids int32 or int64, shape (B, sequence_length) with B * sequence_length equal
 *        to the config's global_batch_size (divided by the data-parallel size after
 *        olm_trainer_set_dist(): this rank's part of the global batch, see
 *        olm_trainer_layout_get(); the world size unless tensor or context parallelism
 *        take some of the ranks).
 * @param labels Targets shaped like input_ids (-100 ignores a position), or NULL for
 *        OLMo-core's default: input_ids shifted left by one, the last position ignored.
 * @param out Receives the step's metrics; its struct_size must be set.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, shapes that do not
 *         match the config, or ids outside the vocabulary (nothing is updated then).
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_step(olm_trainer* trainer, const olm_tensor* input_ids,
                                                 const olm_tensor* labels, olm_step_metrics* out);

/**
 * As olm_trainer_step(), with intra-document masking: tokens attend only to earlier tokens of
 * their own document and RoPE positions restart at 0 in each (OLMo-core's cu_doc_lens).
 *
 * @param trainer The trainer.
 * @param input_ids As for olm_trainer_step().
 * @param labels As for olm_trainer_step(); may be NULL.
 * @param cu_doc_lens Cumulative document lengths over the flattened batch, int32 or int64,
 *        following the rules of olm_forward_options.cu_doc_lens (olm_batch's cu_doc_lens
 *        qualifies); NULL steps without masking, as olm_trainer_step(). Read during the call.
 * @param out Receives the step's metrics; its struct_size must be set.
 * @return As olm_trainer_step(); also OLM_ERR_INVALID_ARGUMENT for a cu_doc_lens that breaks
 *         the rules (nothing is updated then).
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_step_documents(olm_trainer* trainer, const olm_tensor* input_ids,
                                                           const olm_tensor* labels,
                                                           const olm_tensor* cu_doc_lens,
                                                           olm_step_metrics* out);

/**
 * Save a checkpoint: <folder>/step<N>/ with model.safetensors (OLMo-core names),
 * optim.safetensors and meta.olmk. Written to a temporary directory and renamed into place;
 * only the newest keep_last_n checkpoints of the train config are kept.
 *
 * With a process group (olm_trainer_set_dist()) this is a collective that every rank calls
 * with the same folder (a file system all ranks share): the checkpoint is sharded. Each rank
 * r writes rank<r>.safetensors, a contiguous slice of every parameter's and optimizer state
 * tensor's flattened elements (under FSDP: the pieces of the parameters and of their
 * optimizer state that its shard holds, recorded with their offsets in the whole parameter;
 * under tensor parallelism: its slice of each split parameter and of its optimizer state, or
 * its pieces within the slice, recorded by the slice's place in the whole tensor, replicated
 * tensors written once; so the checkpoint means the same as a DDP one and loads at any
 * layout); rank 0 writes meta.olmk (global shapes, dtypes, checksums, each
 * shard's offsets, world size, step, data position) and renames the directory into place only
 * after every rank finished, so a checkpoint appears whole or not at all. A failure on any rank
 * fails the call on every rank. olm_trainer_load_checkpoint() and `olm convert` read sharded
 * checkpoints at any world size.
 *
 * @param trainer The trainer.
 * @param folder The save folder (created if missing).
 * @param out_path Receives the checkpoint directory's path as a NUL-terminated buffer owned
 *        by the caller; may be NULL.
 * @return NULL on success; OLM_ERR_IO when writing fails (earlier checkpoints stay intact);
 *         with a process group, OLM_ERR_DISTRIBUTED when a rank is gone.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_save_checkpoint(olm_trainer* trainer,
                                                            const char* folder,
                                                            olm_buffer** out_path);

/**
 * Restore weights, optimizer state, counters and RNG state from a checkpoint.
 *
 * @param trainer A trainer whose model has the checkpoint's model config.
 * A sharded checkpoint (saved by a process group) loads at any world size, with or without
 * a process group: each tensor is assembled from the shard files that cover it. Call it on
 * every rank, then olm_trainer_set_dist() (or it was set before: every rank loaded the same).
 * Under FSDP (set olm_trainer_set_dist() first) each rank reads and verifies only the shard
 * entries overlapping its own pieces, and the call is a collective: a failure on any rank
 * fails it on every rank with nothing loaded. Any checkpoint (single process, DDP or FSDP, any
 * world size) loads into an FSDP trainer.
 *
 * @param path A checkpoint directory, or a save folder (its newest checkpoint is used).
 * @return NULL on success; OLM_ERR_IO when no checkpoint is found or a shard file is missing
 *         (the message names it); OLM_ERR_PARSE for a corrupt checkpoint (checksum or shape
 *         mismatch, shards that do not tile a tensor: the message names the file and tensor);
 *         OLM_ERR_MISMATCH for a checkpoint of another model config. The trainer is unchanged
 *         on error.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_load_checkpoint(olm_trainer* trainer,
                                                            const char* path);

/**
 * Release a trainer (the model lives on while other handles hold it).
 *
 * @param trainer A trainer, or NULL (no-op).
 */
OLM_API void olm_trainer_free(olm_trainer* trainer);

/* ------------------------------------------------------------------------------------ */
/* Token data                                                                            */
/* ------------------------------------------------------------------------------------ */

/** A token dataset: one token stream cut into fixed-length training instances.
 *  Immutable and safe to share between threads. Release with olm_dataset_free(). */
typedef struct olm_dataset olm_dataset;

/** Options for the olm_dataset_* constructors. Fill with olm_dataset_options_init(). */
typedef struct olm_dataset_options {
    size_t struct_size;
    /** Tokens per training instance, > 0 (required). */
    int64_t sequence_length;
    /** Every token must be < vocab_size, > 0 (required). */
    int64_t vocab_size;
    /** Documents end after this token (batches then carry document boundaries); -1 (the
     *  default) for none. */
    int64_t eos_token_id;
    /** Tokens never used as targets (their label positions become -100); may be NULL. */
    const int64_t* masked_token_ids;
    size_t num_masked_token_ids;
    /** Element type of raw (non-.npy) token files: "uint16" (default) or "uint32". */
    const char* raw_dtype;
} olm_dataset_options;

/**
 * Fill dataset options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_dataset_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_dataset_options_init_sized(olm_dataset_options* options, size_t struct_size);
/** Fill dataset options with their defaults (see olm_dataset_options_init_sized()). */
#define olm_dataset_options_init(options) olm_dataset_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_dataset_options_init)(olm_dataset_options* options);

/**
 * Open token files as one stream, memory-mapped: raw little-endian uint16/uint32 arrays
 * (numpy memmap files, no header) and 1-D .npy files. Every token is checked against the
 * vocabulary when the files are opened.
 *
 * @param paths num_paths file paths.
 * @param num_paths The number of files, > 0.
 * @param options The options (sequence_length and vocab_size are required).
 * @param out On success, receives a new dataset owned by the caller.
 * @return NULL on success; OLM_ERR_IO when a file cannot be opened; OLM_ERR_PARSE for a
 *         malformed file (a byte count that is not a multiple of the element size, a bad
 *         .npy header, an empty file, a token outside the vocabulary; the message names the
 *         file and offset); OLM_ERR_INVALID_ARGUMENT for bad options.
 */
OLM_API OLM_MUST_USE olm_error* olm_dataset_from_files(const char* const* paths, size_t num_paths,
                                                       const olm_dataset_options* options,
                                                       olm_dataset** out);

/**
 * Build a dataset from host token ids (for callers with their own tokenizer). Copied.
 *
 * @param tokens num_tokens ids, each in [0, vocab_size).
 * @param num_tokens The number of tokens, >= sequence_length.
 * @param options The options (sequence_length and vocab_size are required).
 * @param out On success, receives a new dataset owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for bad options, too few tokens or a
 *         token outside the vocabulary.
 */
OLM_API OLM_MUST_USE olm_error* olm_dataset_from_tokens(const int64_t* tokens, size_t num_tokens,
                                                        const olm_dataset_options* options,
                                                        olm_dataset** out);

/**
 * The number of tokens and of fixed-length instances in a dataset.
 *
 * @param dataset The dataset.
 * @param num_tokens Receives the token count (may be NULL).
 * @param num_instances Receives the instance count, num_tokens / sequence_length (may be NULL).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT when dataset is NULL.
 */
OLM_API OLM_MUST_USE olm_error* olm_dataset_size(const olm_dataset* dataset, int64_t* num_tokens,
                                                 int64_t* num_instances);

/** A training batch built from dataset instances. Tensors are owned by the caller: release
 *  them with olm_batch_free(). */
typedef struct olm_batch {
    size_t struct_size;
    /** (B, sequence_length) int64. */
    olm_tensor* input_ids;
    /** (B, sequence_length) int64: input_ids shifted left, -100 where nothing is predicted
     *  (the last position, masked tokens), as OLMo-core makes labels. */
    olm_tensor* labels;
    /** int32 cumulative document lengths over the flattened batch, starting at 0; NULL when
     *  the dataset has no eos_token_id. */
    olm_tensor* cu_doc_lens;
    /** The longest document in the batch (0 without eos_token_id). */
    int64_t max_doc_len;
} olm_batch;

/**
 * Build a batch from instance indices.
 *
 * @param dataset The dataset.
 * @param indices num_indices instance indices, each in [0, num_instances).
 * @param num_indices The batch size, > 0.
 * @param out The caller's struct; its struct_size must be set. Filled only on success.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or an index out of range.
 */
OLM_API OLM_MUST_USE olm_error* olm_dataset_batch(const olm_dataset* dataset, const int64_t* indices,
                                                  size_t num_indices, olm_batch* out);

/**
 * Release the tensors of a batch and set those fields to NULL.
 *
 * @param batch A batch, or NULL (no-op).
 */
OLM_API void olm_batch_free(olm_batch* batch);

/**
 * Release a dataset.
 *
 * @param dataset A dataset, or NULL (no-op).
 */
OLM_API void olm_dataset_free(olm_dataset* dataset);

/* ------------------------------------------------------------------------------------ */
/* Training loops                                                                        */
/* ------------------------------------------------------------------------------------ */

/**
 * Called after every optimizer step of olm_trainer_fit(). Return 0 to continue, non-zero to
 * stop cleanly (a checkpoint is saved first when the config has a save_folder).
 */
typedef int32_t (*olm_metrics_callback)(const olm_step_metrics* metrics, void* user_data);

/** Called with the library's progress messages (checkpoints saved, evaluations). */
typedef void (*olm_log_callback)(const char* message, void* user_data);

/** The result of an evaluation. */
typedef struct olm_eval_metrics {
    size_t struct_size;
    /** Mean cross-entropy per target token. */
    double loss;
    double perplexity;
    int64_t tokens;
} olm_eval_metrics;

/** Options for olm_trainer_fit(). Fill with olm_fit_options_init(). */
typedef struct olm_fit_options {
    size_t struct_size;
    /** Evaluated every eval_interval steps and at the end; may be NULL (then, when fit's
     *  train_data is NULL too, the config's eval_data section). */
    const olm_dataset* eval_data;
    olm_metrics_callback on_step;
    olm_log_callback on_log;
    void* user_data;
    /** Intra-document masking from the datasets' document boundaries (their eos_token_id):
     *  -1 (the default) follows the train config (data.generate_doc_lengths for training,
     *  eval_data.generate_doc_lengths for evaluation), 0 never, 1 for training and
     *  evaluation. A dataset without an eos_token_id has no documents to mask. */
    int32_t document_masking;
} olm_fit_options;

/**
 * Fill fit options with their defaults, writing only the first struct_size bytes, so a program
 * built against an older (smaller) struct is never overrun. Call it through the
 * olm_fit_options_init() macro, which passes sizeof *(options).
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_fit_options_init_sized(olm_fit_options* options, size_t struct_size);
/** Fill fit options with their defaults (see olm_fit_options_init_sized()). */
#define olm_fit_options_init(options) olm_fit_options_init_sized((options), sizeof *(options))
/** The unsized entry point of olm 0.1, for binaries built against it; new code uses the macro. */
OLM_API void (olm_fit_options_init)(olm_fit_options* options);

/**
 * Train until the config's max_steps on batches drawn from a dataset in a deterministic
 * order (the config's seed and the epoch), evaluating and checkpointing as configured and
 * writing JSON-lines metrics to the config's metrics_path. After olm_trainer_load_checkpoint()
 * the data order continues where the checkpoint left off. This is the same training run as
 * `olm train` and `olm resume`: with train_data NULL it opens the config's `data` section
 * (and, unless options->eval_data is given, its `eval_data` section), so a host program trains
 * from the JSON the command takes. Relative paths in a config built from JSON text are taken
 * against the current directory (`olm train` takes them against the config file's directory).
 *
 * Before step 1 the save folder and the metrics file are checked writable; the metrics file
 * keeps only the lines of steps up to the trainer's step (a resumed run does not repeat the
 * steps it replays), and a step's checkpoint is written once.
 *
 * To stop on a signal as `olm train` does on SIGINT and SIGTERM (save a checkpoint, then
 * return): set a flag in the signal handler and return non-zero from on_step when it is set;
 * fit then saves a checkpoint (with a save_folder) and returns NULL.
 *
 * @param trainer The trainer.
 * @param train_data The training data, whose sequence_length must equal the config's; or
 *        NULL for the config's `data` section.
 * @param options Options, or NULL for the defaults.
 * @param out Receives the last evaluation (zeroed when none ran); may be NULL.
 * @return NULL on success, including a stop requested by a callback; OLM_ERR_INVALID_ARGUMENT
 *         for a NULL trainer, a dataset that does not fit the config, a config without a
 *         `data` section when train_data is NULL, or nothing to train (max_steps unset, or not
 *         above the trainer's step); OLM_ERR_IO when a data file cannot be read or a
 *         checkpoint or the metrics file cannot be written.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_fit(olm_trainer* trainer, const olm_dataset* train_data,
                                                const olm_fit_options* options,
                                                olm_eval_metrics* out);

/**
 * Validation loss and perplexity over a dataset's instances, in order, with intra-document
 * masking when the train config's eval_data.generate_doc_lengths is set.
 *
 * @param trainer The trainer (its model and precision are used).
 * @param data The dataset.
 * @param max_batches Evaluate at most this many batches of the config's global batch size;
 *        0 for all.
 * @param out Receives the metrics; its struct_size must be set.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, max_batches < 0, a
 *         struct_size too small, or a token id of the evaluated instances outside the
 *         model's vocabulary (the message names `data`, the instance and the id; checked
 *         before any batch is evaluated).
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_evaluate(olm_trainer* trainer, const olm_dataset* data,
                                                     int64_t max_batches, olm_eval_metrics* out);

/* ------------------------------------------------------------------------------------ */
/* Distributed training                                                                  */
/* ------------------------------------------------------------------------------------ */

/** A c10d process group: this process's membership in a group of ranks that train one model
 *  together (PyTorch's Gloo backend for CPU tensors, NCCL for CUDA tensors). Create one per
 *  process with olm_dist_create(); release with olm_dist_free(). A trainer given one keeps it
 *  alive. */
typedef struct olm_dist olm_dist;

/** Process group backends (olm_dist_options.backend, olm_dist_info.backend). */
typedef int32_t olm_dist_backend;
/** nccl when the options' device is CUDA, else gloo. */
#define OLM_DIST_AUTO 0
#define OLM_DIST_GLOO 1
#define OLM_DIST_NCCL 2

/** Options for olm_dist_create(). Fill with olm_dist_options_init(). Fields left at their
 *  "unset" value are read from the environment a launcher provides: torchrun's RANK,
 *  WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, or else Slurm's
 *  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (with MASTER_ADDR and
 *  MASTER_PORT); without either, a group of one process. */
typedef struct olm_dist_options {
    size_t struct_size;
    /** OLM_DIST_AUTO (default), OLM_DIST_GLOO or OLM_DIST_NCCL. */
    olm_dist_backend backend;
    /** The training device, "cpu" (default), "cuda" or "cuda:N" (anything else is refused
     *  naming options.device); picks the backend for OLM_DIST_AUTO. */
    const char* device;
    /** This process's rank in [0, world_size); -1 (default): from the environment. */
    int64_t rank;
    /** The number of processes, in [1, 2^20]; -1 (default): from the environment. */
    int64_t world_size;
    /** The rank within this machine, in [0, local_world_size); -1 (default): from the
     *  environment, else rank. */
    int64_t local_rank;
    /** Processes on this machine, in [1, 2^20]; -1 (default): from the environment, else
     *  world_size. */
    int64_t local_world_size;
    /** The rendezvous host (rank 0's, or torchrun's agent); NULL (default): MASTER_ADDR, else
     *  "127.0.0.1". */
    const char* master_addr;
    /** The rendezvous TCP port; 0 (default): MASTER_PORT, else 29500. */
    int32_t master_port;
    /** The whole rendezvous (reaching rank 0's store and every rank's arrival) fails with
     *  OLM_ERR_DISTRIBUTED when it has not completed this many seconds after olm_dist_create()
     *  was called, on every rank and whatever the world size (a rank whose rank 0 never
     *  comes fails within about 0.1 s past it); every collective fails after this long too,
     *  instead of waiting forever. Default 300. */
    double timeout_seconds;
} olm_dist_options;

/** What olm_dist_info() reports. */
typedef struct olm_dist_info {
    size_t struct_size;
    int64_t rank;
    int64_t world_size;
    int64_t local_rank;
    int64_t local_world_size;
    /** OLM_DIST_GLOO or OLM_DIST_NCCL. */
    olm_dist_backend backend;
    /** Collectives issued and payload bytes this rank has all-reduced or broadcast so far. */
    int64_t collectives;
    int64_t bytes;
} olm_dist_info;

/**
 * Fill process group options with their defaults (everything from the environment), writing
 * only the first struct_size bytes. Call it through the olm_dist_options_init() macro.
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_dist_options_init_sized(olm_dist_options* options, size_t struct_size);
/** Fill process group options with their defaults (see olm_dist_options_init_sized()). */
#define olm_dist_options_init(options) olm_dist_options_init_sized((options), sizeof *(options))

/**
 * Join a process group: every rank calls this with the same world size and rendezvous
 * address. Rank 0 hosts a TCPStore at master_addr:master_port (under torchrun, its agent
 * already does), every rank checks in, then the backend connects every pair of ranks.
 *
 * @param options The options, or NULL for the defaults (all from the environment).
 * @param out On success, receives a new process group owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for a bad option or environment variable
 *         (the message names it: options.device, options.world_size, options.rank, ...);
 *         OLM_ERR_DISTRIBUTED (a one-line message) when a rank does not arrive within the
 *         timeout (the message names the missing ranks) or the store cannot be reached;
 *         OLM_ERR_DEVICE_UNAVAILABLE for the nccl backend, which this build does not offer.
 */
OLM_API OLM_MUST_USE olm_error* olm_dist_create(const olm_dist_options* options, olm_dist** out);

/**
 * This process's place in the group.
 *
 * @param dist The process group.
 * @param out The caller's struct; its struct_size must be set. Filled only on success.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_dist_info_get(const olm_dist* dist, olm_dist_info* out);

/**
 * Wait until every rank has reached this call.
 *
 * @param dist The process group.
 * @return NULL on success; OLM_ERR_DISTRIBUTED when a rank died or did not come within the
 *         timeout (the message names it).
 */
OLM_API OLM_MUST_USE olm_error* olm_dist_barrier(olm_dist* dist);

/**
 * Sum a float32 or int64 CPU tensor over all ranks, in place (c10d's all-reduce).
 *
 * @param dist The process group.
 * @param tensor The tensor; every rank passes the same shape and dtype. Overwritten with the sum.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or an unsupported
 *         tensor; OLM_ERR_DISTRIBUTED when a rank died or timed out.
 */
OLM_API OLM_MUST_USE olm_error* olm_dist_all_reduce_sum(olm_dist* dist, olm_tensor* tensor);

/**
 * Leave the group cleanly: a final barrier, then the connections close. Later collectives on
 * this group (including training steps of trainers using it) fail with OLM_ERR_DISTRIBUTED.
 * Calling it twice is a no-op.
 *
 * @param dist The process group.
 * @return NULL on success; OLM_ERR_DISTRIBUTED when another rank does not reach the barrier.
 */
OLM_API OLM_MUST_USE olm_error* olm_dist_shutdown(olm_dist* dist);

/**
 * Release a process group handle (the group lives on while a trainer holds it).
 *
 * @param dist A process group, or NULL (no-op).
 */
OLM_API void olm_dist_free(olm_dist* dist);

/**
 * Train data-parallel (DDP): every rank's trainer takes the same model config and train
 * config; rank 0's parameters are broadcast to all (so call this on every rank, before the
 * first step or right after every rank loaded the same checkpoint). From then on olm_trainer_step() takes this rank's global_batch_size /
 * world_size tokens, gradients are summed over ranks in buckets while backward runs, and the
 * loss is normalized by the global batch's target tokens, as one process with the whole
 * global batch would; olm_trainer_fit() gives each rank its own slice of every global batch,
 * only rank 0 writes metrics, and every rank writes its shard of each checkpoint (see
 * olm_trainer_save_checkpoint()); olm_trainer_evaluate() (and fit's
 * evaluations) split the batches across ranks and sum, so every rank must call it.
 *
 * With the train config's `"data_parallel": {"name": "fsdp"}` (OLMo-core's
 * TransformerDataParallelConfig; default "ddp") the trainer shards instead (FSDP, ZeRO-3): each
 * rank keeps a flat 1/world_size slice of every block's parameters (and of the rest as one
 * root unit) and the optimizer state of that slice only (each slice keeps its part of the
 * optimizer state the trainer had, e.g. from a checkpoint loaded before);
 * each block is all-gathered before its forward and its backward and freed after them, and
 * gradients are reduce-scattered in float32. Between steps the model's parameters then hold
 * no data: an evaluation (a collective) gathers them all and leaves them gathered until the
 * next step, and detaching with NULL (a collective) gathers them for good and rebuilds the
 * optimizer over the full parameters (fresh state). Checkpoints under FSDP are sharded by
 * pieces (olm_trainer_save_checkpoint()); nGPT and MoE models are refused
 * (OLM_ERR_INVALID_CONFIG).
 *
 * With the train config's tensor_parallel and context_parallel sections the world is laid out
 * as a device mesh (olm_trainer_layout_get()); a trainer split by tensor parallelism keeps its
 * group (a later call fails with OLM_ERR_INVALID_ARGUMENT; save a checkpoint and load it into
 * a new trainer to change the layout).
 *
 * @param trainer The trainer.
 * @param dist The process group; kept alive by the trainer. NULL detaches (single process).
 *        The trainer issues collectives on it during steps, fits and evaluations: do not
 *        use dist (barrier, all-reduce) from another thread meanwhile.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for a NULL trainer; OLM_ERR_INVALID_CONFIG when global_batch_size does not divide
 *         over the data-parallel ranks, when the tensor- and context-parallel degrees do not
 *         divide the world size, or when the model cannot be split that way (the message names
 *         the field: heads, hidden size or vocabulary not divisible by the degree, MoE or
 *         GatedDeltaNet blocks); OLM_ERR_DISTRIBUTED when the broadcast fails.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_set_dist(olm_trainer* trainer, olm_dist* dist);

/** Where this rank sits in its trainer's device mesh (olm_trainer_layout_get()). */
typedef struct olm_trainer_layout {
    size_t struct_size;
    /** Which part of each global batch this rank takes: olm_trainer_step() wants
     *  global_batch_size / data_parallel_size tokens, batch data_parallel_rank of each global
     *  batch's data_parallel_size parts (olm_trainer_fit() picks it itself). The ranks of one
     *  tensor- or context-parallel group share it. 0 and 1 without a process group. */
    int64_t data_parallel_rank;
    int64_t data_parallel_size;
    /** This rank's place in its tensor-parallel group (the train config's
     *  tensor_parallel.degree; 0 and 1 without tensor parallelism). */
    int64_t tensor_parallel_rank;
    int64_t tensor_parallel_size;
    /** This rank's place in its context-parallel group (context_parallel.degree; 0 and 1
     *  without context parallelism). */
    int64_t context_parallel_rank;
    int64_t context_parallel_size;
} olm_trainer_layout;

/**
 * Where this rank sits in the trainer's device mesh. With the train config's
 * `"tensor_parallel": {"degree": T}` and/or `"context_parallel": {"degree": C, "ring": {}}` (or
 * `"uly": {}`), olm_trainer_set_dist() lays the world out as OLMo-core's mesh (dp_replicate,
 * dp_shard, cp, tp), row-major, so a TP group is T consecutive ranks: the model's attention
 * heads, feed-forward units and vocabulary are split over the TP group (with sequence
 * parallelism between them), every sequence over the CP group (ring attention with the zig-zag
 * load balancer, or Ulysses), and data parallelism (DDP, FSDP or HSDP) runs over the remaining
 * world_size / (T x C) coordinates.
 *
 * @param trainer The trainer.
 * @param out The caller's struct; its struct_size must be set. Filled only on success.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_trainer_layout_get(const olm_trainer* trainer, olm_trainer_layout* out);

/* ------------------------------------------------------------------------------------ */
/* Parameters by name, DLPack exchange, threads                                          */
/* ------------------------------------------------------------------------------------ */

/**
 * Copy one parameter of a model into a new tensor.
 *
 * @param model The model. Refused while a trainer with data_parallel "fsdp" holds its
 *        parameters sharded between steps (they hold no data then).
 * @param name An OLMo-core state-dict name, e.g. "blocks.0.attention.w_q.weight": one of the
 *        names olm_model_parameter_info() lists, a persistent buffer olm_model_save_safetensors()
 *        writes (an MoE router's "blocks.N.feed_forward_moe.router.score_bias"), or, with
 *        tie_word_embeddings, "lm_head.w_out.weight" for the shared embeddings.weight.
 * @param out On success, receives a new tensor owned by the caller: a contiguous copy with the
 *        parameter's dtype and shape, on the model's device (olm_tensor_copy_to_host() reads it
 *        from any device). Later changes to the model do not change it, nor it the model.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, a sharded model, or an
 *         unknown name (the message names the nearest known name).
 */
OLM_API OLM_MUST_USE olm_error* olm_model_get_parameter(const olm_model* model, const char* name,
                                                        olm_tensor** out);

/**
 * Overwrite one parameter of a model with a tensor's values, in place.
 *
 * The parameter stays the same tensor: whether it is trainable, and the optimizer state a
 * trainer of this model keeps for it (AdamW moments, step counts), are unchanged; the next
 * olm_trainer_step() updates the new values. The copy runs without autograd. With a process
 * group (olm_trainer_set_dist()), set the same value on every rank, or the replicas diverge. An
 * nGPT model's matrices are not renormalized (call olm_model_normalize_matrices()).
 *
 * @param model The model. Refused while a trainer with data_parallel "fsdp" holds its
 *        parameters sharded between steps (they hold no data then). After an FSDP evaluation
 *        they are gathered copies that the next step replaces from the shards, so a write there
 *        is lost: detach the trainer's process group (olm_trainer_set_dist(trainer, NULL))
 *        before writing, as for olm_model_load_safetensors().
 * @param name A name as for olm_model_get_parameter().
 * @param value The new values: the parameter's shape; the parameter's dtype, or float32 (then
 *        rounded to the parameter's dtype, e.g. bfloat16, to nearest even); on any device
 *        (copied to the model's). Not owned: only read during the call.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, an unknown name (the
 *         message names the nearest known name), a shape or dtype that does not fit (the
 *         message gives both) or a sharded model. On error the model is unchanged.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_set_parameter(olm_model* model, const char* name,
                                                        const olm_tensor* value);

/**
 * Export a tensor through DLPack without copying, for PyTorch (torch.from_dlpack), NumPy,
 * JAX, CuPy and other frameworks.
 *
 * The result is a `DLManagedTensor*` of the DLPack C ABI (dlpack.h, the unversioned struct
 * of DLPack v0.6 to v1.x: `DLTensor dl_tensor; void* manager_ctx; void (*deleter)(struct
 * DLManagedTensor*)`), passed as void* so that this header does not need dlpack.h. It shares
 * the tensor's memory (host or CUDA device memory; writes through either are seen by both)
 * and keeps that memory alive on its own: the tensor may be freed before or after. Python
 * callers wrap it in a PyCapsule named "dltensor".
 *
 * @param tensor The tensor (not consumed; the caller still owns and frees it).
 * @param out_dl_managed_tensor On success, receives the DLManagedTensor. Its consumer owns it and
 *        must call its deleter exactly once, from any thread, when done (a framework that
 *        imports it does so itself).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_to_dlpack(const olm_tensor* tensor,
                                                     void** out_dl_managed_tensor);

/**
 * Import a DLPack tensor without copying.
 *
 * @param dl_managed_tensor A `DLManagedTensor*` (the unversioned DLPack struct, see
 *        olm_tensor_to_dlpack()) on the CPU (kDLCPU) or a CUDA device (kDLCUDA), of dtype int32,
 *        int64, float32, float16 or bfloat16 (one lane), with at most OLM_MAX_DIMS dimensions;
 *        strides are honoured (NULL strides: row-major). On success the library takes
 *        ownership: it calls the deleter exactly once, when the returned tensor and every
 *        tensor sharing its memory are gone. On error the caller still owns it.
 * @param out On success, receives a new tensor owned by the caller, sharing the memory.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or a dtype, device or
 *         shape the library cannot represent (the message says which).
 */
OLM_API OLM_MUST_USE olm_error* olm_tensor_from_dlpack(void* dl_managed_tensor, olm_tensor** out);

/**
 * Set the number of CPU threads the library's operations use (ATen's intra-op thread pool:
 * OpenMP, MKL).
 *
 * Process-wide: it applies to every thread that calls into the library, including threads
 * that already did (each applies the new count at its next olm_* call, so it also holds for
 * Go's goroutines, which move between threads). A call in progress keeps the count it began
 * with. Initially the library uses ATen's default (the number of physical cores, or
 * OMP_NUM_THREADS). GPU work is not affected. Call it from one thread at a time.
 *
 * @param num_threads The number of threads, 1 to 1024.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT when num_threads is out of range.
 */
OLM_API OLM_MUST_USE olm_error* olm_set_num_threads(int32_t num_threads);

/**
 * The number of CPU threads the library's operations use (see olm_set_num_threads()).
 *
 * @return The thread count, >= 1.
 */
OLM_API int32_t olm_get_num_threads(void);

/* ------------------------------------------------------------------------------------ */
/* Hugging Face model directories                                                        */
/* ------------------------------------------------------------------------------------ */

/*
 * A Hugging Face model directory holds config.json, the weights as model.safetensors or as
 * model-0000k-of-0000n.safetensors shards listed by model.safetensors.index.json,
 * generation_config.json and tokenizer files. olm reads and writes the causal-LM classes it
 * computes exactly as transformers does: LlamaForCausalLM (rope_scaling linear, llama3,
 * dynamic, yarn), Olmo2ForCausalLM, Olmo3ForCausalLM, Qwen3ForCausalLM, OlmoeForCausalLM,
 * Qwen3MoeForCausalLM and Gemma3ForCausalLM. A config.json field that changes the model and
 * that olm cannot express (an unknown architecture, attention_bias, mlp_bias, a rope_scaling
 * type or parameter, final_logit_softcapping, ...) is refused with OLM_ERR_INVALID_CONFIG
 * naming it; fields that do not change the forward pass (use_cache, token ids, ...) are
 * accepted.
 */

/** Options for olm_model_from_hf_dir() and olm_config_from_hf_dir(). Fill with
 *  olm_hf_load_options_init(). */
typedef struct olm_hf_load_options {
    size_t struct_size;
    /** The model's parameter dtype: -1 (the default) takes config.json's torch_dtype
     *  (float16 models load as float32, which holds every float16 value exactly);
     *  otherwise OLM_DTYPE_FLOAT32 or OLM_DTYPE_BFLOAT16. The files may hold any of
     *  float32, bfloat16 and float16 whatever the model's dtype. */
    olm_dtype dtype;
    /** The device: "cpu" (the default; NULL means the same), "cuda" or "cuda:N". */
    const char* device;
} olm_hf_load_options;

/**
 * Fill Hugging Face load options with their defaults, writing only the first struct_size
 * bytes. Call it through the olm_hf_load_options_init() macro.
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_hf_load_options_init_sized(olm_hf_load_options* options, size_t struct_size);
/** Fill Hugging Face load options with their defaults (see olm_hf_load_options_init_sized()). */
#define olm_hf_load_options_init(options) olm_hf_load_options_init_sized((options), sizeof *(options))

/**
 * The olm model config for a Hugging Face model directory's config.json, without reading
 * any weights. olm_config_to_json() gives it as olm JSON.
 *
 * @param dir The model directory (its config.json is read).
 * @param options NULL for the defaults; only `dtype` is used (the config's dtype).
 * @param out On success, receives a new config owned by the caller (olm_config_free()).
 * @return NULL on success; OLM_ERR_IO when config.json cannot be read; OLM_ERR_PARSE for
 *         malformed JSON or a field of the wrong type; OLM_ERR_INVALID_CONFIG naming the field
 *         olm cannot express; OLM_ERR_INVALID_ARGUMENT for NULL pointers or bad options.
 *         Messages name the file and the field.
 */
OLM_API OLM_MUST_USE olm_error* olm_config_from_hf_dir(const char* dir, const olm_hf_load_options* options,
                                                        olm_config** out);

/**
 * Load a Hugging Face model directory: the config from config.json, the weights from
 * model.safetensors or the shards model.safetensors.index.json lists.
 *
 * Every file is checked before any weight is copied: each file the index names exists, no
 * tensor is in two files, the index and the files list the same tensors, and every tensor
 * the config needs is there with its shape and a floating dtype, and no other (a tied
 * lm_head.weight is ignored, as transformers does). The files are memory-mapped and read one
 * at a time; each tensor is copied once, straight into the model, so the weights never exist
 * twice in memory.
 *
 * @param dir The model directory.
 * @param options NULL for the defaults (config.json's dtype, on the CPU).
 * @param out On success, receives a new model owned by the caller (olm_model_free()); left
 *        untouched on error.
 * @return NULL on success; OLM_ERR_IO for a missing config.json, weight file or shard;
 *         OLM_ERR_PARSE for malformed JSON or safetensors; OLM_ERR_INVALID_CONFIG naming a
 *         config.json field olm cannot express; OLM_ERR_MISMATCH naming the file and tensor
 *         that does not fit the config or the index; OLM_ERR_OUT_OF_MEMORY,
 *         OLM_ERR_DEVICE_UNAVAILABLE; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_from_hf_dir(const char* dir, const olm_hf_load_options* options,
                                                       olm_model** out);

/** Options for olm_model_save_hf_dir(). Fill with olm_hf_save_options_init(). */
typedef struct olm_hf_save_options {
    size_t struct_size;
    /** The largest weight file, in bytes (default 5 GiB). The weights go into one
     *  model.safetensors when they fit, else into model-0000k-of-0000n.safetensors shards
     *  and model.safetensors.index.json; a tensor larger than this gets a shard of its own. */
    int64_t max_shard_bytes;
    /** A directory whose tokenizer files (tokenizer.json, tokenizer_config.json,
     *  special_tokens_map.json, tokenizer.model, vocab.json, merges.txt, added_tokens.json,
     *  those present) are copied along; NULL (the default): none. */
    const char* tokenizer_source_dir;
    /** The files' dtype: -1 (the default) the model's parameter dtype; otherwise
     *  OLM_DTYPE_FLOAT32, OLM_DTYPE_BFLOAT16 or OLM_DTYPE_FLOAT16. */
    olm_dtype dtype;
    /** Written to config.json and generation_config.json; -1 (the default): unknown. */
    int64_t bos_token_id;
    int64_t eos_token_id;
} olm_hf_save_options;

/**
 * Fill Hugging Face save options with their defaults, writing only the first struct_size
 * bytes. Call it through the olm_hf_save_options_init() macro.
 *
 * @param options The options to fill; ignored when NULL.
 * @param struct_size sizeof the caller's struct; ignored when smaller than a size_t.
 */
OLM_API void olm_hf_save_options_init_sized(olm_hf_save_options* options, size_t struct_size);
/** Fill Hugging Face save options with their defaults (see olm_hf_save_options_init_sized()). */
#define olm_hf_save_options_init(options) olm_hf_save_options_init_sized((options), sizeof *(options))

/**
 * Write a model as a Hugging Face model directory that transformers'
 * AutoModelForCausalLM.from_pretrained loads with no missing or unexpected keys:
 * config.json, generation_config.json, the weights and the tokenizer files.
 *
 * Everything is written into a temporary directory next to `dir` and renamed into place, so
 * `dir` either appears complete or not at all; an existing non-empty `dir` is refused.
 *
 * @param model The model (not modified).
 * @param dir The directory to create (its parent directories are created as needed).
 * @param options NULL for the defaults.
 * @return NULL on success; OLM_ERR_INVALID_CONFIG naming the feature of a model no supported
 *         transformers class computes (nGPT, biases, a LayerNorm, capacity-limited experts,
 *         ...); OLM_ERR_INVALID_ARGUMENT for NULL pointers, bad options or a non-empty `dir`;
 *         OLM_ERR_IO when a file cannot be written or the tokenizer source has no tokenizer
 *         file.
 */
OLM_API OLM_MUST_USE olm_error* olm_model_save_hf_dir(const olm_model* model, const char* dir,
                                                       const olm_hf_save_options* options);

/* ------------------------------------------------------------------------------------ */
/* Tokenizers                                                                            */
/* ------------------------------------------------------------------------------------ */

/**
 * A tokenizer: text <-> token ids, natively (no Python). Reads Hugging Face tokenizer.json
 * files and SentencePiece .model files; ids match the `tokenizers` and `sentencepiece`
 * packages. Immutable once loaded: unlike other handles, one tokenizer may be used from many
 * threads at once (every function below takes it as const). Release with olm_tokenizer_free().
 */
typedef struct olm_tokenizer olm_tokenizer;

/**
 * Load a tokenizer from a file or a Hugging Face model directory.
 *
 * A file is recognised by its content: a JSON object with a "model" member is a
 * tokenizer.json, anything else is read as a SentencePiece model. A directory holds
 * tokenizer.json (preferred) or tokenizer.model. A tokenizer_config.json beside the file (or in
 * the directory) assigns the special roles by its bos_token, eos_token, pad_token and
 * unk_token (a token's text or an object with "content"; null: no such role); roles it does
 * not name keep the tokenizer's own (a SentencePiece model's <s>, </s>, <pad>, <unk>).
 *
 * With add_special_tokens, a SentencePiece tokenizer prepends the BOS id when there is one and
 * appends nothing (as transformers' LlamaTokenizer); a tokenizer.json applies its
 * post-processor's template.
 *
 * @param path A NUL-terminated path.
 * @param out On success, receives a new tokenizer owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers; OLM_ERR_IO when the file
 *         or directory cannot be read; OLM_ERR_PARSE for malformed JSON or a file that is not a
 *         SentencePiece model; OLM_ERR_INVALID_CONFIG for a component the library does not
 *         implement or a role naming a token the vocabulary lacks (messages name the file and
 *         the key).
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_load(const char* path, olm_tokenizer** out);

/**
 * Release a tokenizer.
 *
 * @param tokenizer A tokenizer, or NULL (no-op).
 */
OLM_API void olm_tokenizer_free(olm_tokenizer* tokenizer);

/**
 * Encode one text into a new int32 tensor of token ids.
 *
 * @param tokenizer The tokenizer.
 * @param text UTF-8 text; need not be NUL-terminated (a NUL byte is text like any other). May
 *        be NULL when len is 0.
 * @param len The number of bytes of text.
 * @param add_special_tokens Non-zero: add the special tokens the tokenizer's template adds
 *        (see olm_tokenizer_load()).
 * @param out On success, receives a new 1-D OLM_DTYPE_INT32 host tensor owned by the caller
 *        (possibly empty).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or text that is not
 *         UTF-8 (the message gives the byte offset).
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_encode(const olm_tokenizer* tokenizer, const char* text,
                                                     size_t len, int32_t add_special_tokens,
                                                     olm_tensor** out);

/**
 * Encode one text into a caller's buffer.
 *
 * To size the buffer, call with ids NULL and capacity 0: *count receives the number of ids and
 * nothing else is written.
 *
 * @param tokenizer The tokenizer.
 * @param text UTF-8 text, as for olm_tokenizer_encode().
 * @param len The number of bytes of text.
 * @param add_special_tokens As for olm_tokenizer_encode().
 * @param ids Receives the ids; may be NULL only together with capacity 0.
 * @param capacity The number of int32_t values ids can hold.
 * @param count On success, receives the number of ids (written to ids[0..count)).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers, text that is not UTF-8,
 *         or a capacity smaller than the number of ids (the message gives that number; ids and
 *         *count are left untouched).
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_encode_into(const olm_tokenizer* tokenizer, const char* text,
                                                          size_t len, int32_t add_special_tokens,
                                                          int32_t* ids, size_t capacity, size_t* count);

/**
 * Encode many texts at once, in parallel over the texts on the library's CPU threads (see
 * olm_set_num_threads()).
 *
 * The result is ragged: all ids in one tensor, text after text, and the offsets where each
 * text's ids begin. Text i's ids are ids[offsets[i] .. offsets[i + 1]).
 *
 * @param tokenizer The tokenizer.
 * @param texts num_texts UTF-8 texts (need not be NUL-terminated); texts[i] may be NULL when
 *        lengths[i] is 0.
 * @param lengths The byte length of each text.
 * @param num_texts The number of texts; 0 gives an empty ids tensor and offsets {0}.
 * @param add_special_tokens As for olm_tokenizer_encode(), for every text.
 * @param out_ids On success, receives a new 1-D OLM_DTYPE_INT32 tensor owned by the caller.
 * @param out_offsets On success, receives a new 1-D OLM_DTYPE_INT64 tensor of num_texts + 1
 *        offsets into out_ids (the first 0, the last its length), owned by the caller.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or a text that is not
 *         UTF-8 (the message names the text's index and the byte offset). On error neither
 *         tensor is created.
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_encode_batch(const olm_tokenizer* tokenizer,
                                                           const char* const* texts, const size_t* lengths,
                                                           size_t num_texts, int32_t add_special_tokens,
                                                           olm_tensor** out_ids, olm_tensor** out_offsets);

/**
 * Decode token ids into text.
 *
 * Bytes that do not form UTF-8 (a byte-fallback sequence cut short) become U+FFFD, so the text
 * is always UTF-8.
 *
 * @param tokenizer The tokenizer.
 * @param ids count token ids, each in [0, vocab size); may be NULL when count is 0.
 * @param count The number of ids.
 * @param skip_special_tokens Non-zero: special tokens (a SentencePiece model's control tokens,
 *        such as <s> and </s>) give no text; zero: their text is kept.
 * @param out On success, receives a new buffer owned by the caller: the UTF-8 text, also
 *        NUL-terminated (the NUL not counted in olm_buffer_size()).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or an id outside the
 *         vocabulary (the message names its index).
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_decode(const olm_tokenizer* tokenizer, const int32_t* ids,
                                                     size_t count, int32_t skip_special_tokens,
                                                     olm_buffer** out);

/**
 * The id of a token (a vocabulary entry as written in the tokenizer's files, e.g. "▁the" or
 * "<s>"; not text to encode).
 *
 * @param tokenizer The tokenizer.
 * @param token The token's bytes; need not be NUL-terminated. May be NULL when len is 0.
 * @param len The number of bytes of token.
 * @param out Receives the id, or -1 when the vocabulary has no such token.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_token_to_id(const olm_tokenizer* tokenizer, const char* token,
                                                          size_t len, int32_t* out);

/**
 * The token an id stands for, as written in the tokenizer's files.
 *
 * @param tokenizer The tokenizer.
 * @param id A token id.
 * @param out On success, receives a new buffer owned by the caller holding the token's bytes,
 *        also NUL-terminated (the NUL not counted in olm_buffer_size()).
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or an id outside the
 *         vocabulary (or one the vocabulary skips).
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_id_to_token(const olm_tokenizer* tokenizer, int32_t id,
                                                          olm_buffer** out);

/**
 * The vocabulary size: one past the largest id, added tokens included.
 *
 * @param tokenizer The tokenizer.
 * @param out Receives the size.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers.
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_vocab_size(const olm_tokenizer* tokenizer, int64_t* out);

/** The ids of a tokenizer's special roles; -1 where it has none. A result struct: set
 *  struct_size before the call (see the rules at the top of this header). */
typedef struct olm_special_ids {
  size_t struct_size;
  int32_t bos_id;
  int32_t eos_id;
  int32_t pad_id;
  int32_t unk_id;
} olm_special_ids;

/**
 * The ids of a tokenizer's special roles (see olm_tokenizer_load() for where they come from).
 *
 * @param tokenizer The tokenizer.
 * @param out A result struct whose struct_size the caller set; receives the ids.
 * @return NULL on success; OLM_ERR_INVALID_ARGUMENT for NULL pointers or a struct_size too
 *         small for bos_id.
 */
OLM_API OLM_MUST_USE olm_error* olm_tokenizer_special_ids(const olm_tokenizer* tokenizer,
                                                          olm_special_ids* out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OLM_H */
