package olm

/*
#include <stdlib.h>
#include <olm.h>
#include "helpers.h"
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// Model is a transformer language model. Close releases its parameters (device memory
// included) at once; a finalizer only backs Close up.
type Model struct {
	c *C.olm_model
}

// liveModels counts the models not yet released (by Close or the finalizer).
var liveModels atomic.Int64

// ptr is the C handle; NULL for a nil or closed model (the library then reports
// ErrInvalidArgument).
func (m *Model) ptr() *C.olm_model {
	if m == nil {
		return nil
	}
	return m.c
}

// ModelOptions configures NewModel. The zero value is not the default (its ParamDtype is
// Int32, which the library rejects): start from DefaultModelOptions.
type ModelOptions struct {
	ParamDtype  Dtype // ConfigDtype (the default): the config's dtype; or Float32, BFloat16
	InitWeights bool  // initialize with the config's init method and seed (default true)
}

// DefaultModelOptions are libolm's defaults (olm_model_options_init).
func DefaultModelOptions() ModelOptions {
	var o C.olm_model_options
	C.olm_model_options_init_sized(&o, C.sizeof_olm_model_options)
	return ModelOptions{ParamDtype: Dtype(o.param_dtype), InitWeights: o.init_weights != 0}
}

// NewModel builds a model on "cpu", "cuda" or "cuda:N". opts may be nil for the defaults.
func NewModel(cfg *Config, device string, opts *ModelOptions) (*Model, error) {
	var o C.olm_model_options
	C.olm_model_options_init_sized(&o, C.sizeof_olm_model_options)
	if opts != nil {
		o.param_dtype = C.olm_dtype(opts.ParamDtype)
		o.init_weights = 0
		if opts.InitWeights {
			o.init_weights = 1
		}
	}
	cdev := C.CString(device)
	defer C.free(unsafe.Pointer(cdev))
	var out *C.olm_model
	err := takeError(C.olm_model_create(cfg.ptr(), cdev, &o, &out))
	runtime.KeepAlive(cfg)
	if err != nil {
		return nil, err
	}
	m := &Model{c: out}
	liveModels.Add(1)
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// A closed CuDocLens would otherwise read as "no documents" and silently drop the masking.
func closedDocLens() error {
	return &Error{Code: ErrInvalidArgument, Message: "options.cu_doc_lens: the tensor is closed"}
}

// ForwardOptions configures Forward. Start from DefaultForwardOptions.
type ForwardOptions struct {
	LogitsToKeep int64 // keep the logits of the last N positions; 0 (the default) keeps all
	// Intra-document masking: OLMo-core's cumulative document lengths (int32/int64, 1-D,
	// from 0 to batch*seq_len, every row a boundary, as Batch.CuDocLens), or nil (the
	// default) for none. Attention stays inside documents and RoPE restarts in each.
	CuDocLens *Tensor
	MaxDocLen int64 // with CuDocLens: 0 (the default) or an upper bound on the longest document
}

// DefaultForwardOptions are libolm's defaults (olm_forward_options_init).
func DefaultForwardOptions() ForwardOptions {
	var o C.olm_forward_options
	C.olm_forward_options_init_sized(&o, C.sizeof_olm_forward_options)
	return ForwardOptions{LogitsToKeep: int64(o.logits_to_keep)}
}

// Forward returns float32 logits (batch, positions, vocab), on the model's device, for
// int32/int64 ids of shape (batch, seq). opts may be nil for the defaults.
func (m *Model) Forward(ids *Tensor, opts *ForwardOptions) (*Tensor, error) {
	var o C.olm_forward_options
	C.olm_forward_options_init_sized(&o, C.sizeof_olm_forward_options)
	if opts != nil {
		if opts.CuDocLens != nil && opts.CuDocLens.ptr() == nil {
			return nil, closedDocLens()
		}
		o.logits_to_keep = C.int64_t(opts.LogitsToKeep)
		o.cu_doc_lens = opts.CuDocLens.ptr()
		o.max_doc_len = C.int64_t(opts.MaxDocLen)
	}
	var out *C.olm_tensor
	err := takeError(C.olm_model_forward(m.ptr(), ids.ptr(), &o, &out))
	runtime.KeepAlive(m)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(opts)
	if err != nil {
		return nil, err
	}
	return newTensor(out), nil
}

// Reduction is how a loss is reduced over positions.
type Reduction int32

const (
	Mean Reduction = C.OLM_LOSS_REDUCTION_MEAN
	Sum  Reduction = C.OLM_LOSS_REDUCTION_SUM
	None Reduction = C.OLM_LOSS_REDUCTION_NONE
)

// LossOptions configures Loss. The zero value is not the default (IgnoreIndex 0 would ignore
// token 0): start from DefaultLossOptions.
type LossOptions struct {
	IgnoreIndex     int64     // labels equal to this are ignored (default -100)
	Reduction       Reduction // Mean (default), Sum or None
	ZLossMultiplier float64   // 0 (the default) disables the z-loss
	LossDivFactor   float64   // every loss is divided by this; 0 (the default): unset, see olm_loss_options
	ReturnLogits    bool      // also return the float32 logits (default false)
	LogitsToKeep    int64     // the loss over the last N positions only; 0 (default): all
	CuDocLens       *Tensor   // intra-document masking, as ForwardOptions.CuDocLens; nil: none
	MaxDocLen       int64     // as ForwardOptions.MaxDocLen
}

// DefaultLossOptions are libolm's defaults (olm_loss_options_init): ignore -100, mean, no
// z-loss, no loss_div_factor (0: the MoE losses are divided by the token count).
func DefaultLossOptions() LossOptions {
	var o C.olm_loss_options
	C.olm_loss_options_init_sized(&o, C.sizeof_olm_loss_options)
	return LossOptions{IgnoreIndex: int64(o.ignore_index), Reduction: Reduction(o.loss_reduction),
		ZLossMultiplier: float64(o.z_loss_multiplier), LossDivFactor: float64(o.loss_div_factor),
		ReturnLogits: o.return_logits != 0, LogitsToKeep: int64(o.logits_to_keep)}
}

// LossResult holds the losses: tensors (scalars for Mean and Sum, (batch, positions) for
// None) and, for Mean and Sum, the same numbers as float64 (0 for None). Close releases the
// tensors.
type LossResult struct {
	Loss   *Tensor // CELoss + ZLoss, divided by LossDivFactor
	CELoss *Tensor
	ZLoss  *Tensor // nil when the z-loss is disabled
	Logits *Tensor // nil unless ReturnLogits

	LossValue, CELossValue, ZLossValue float64

	// MoE models: the routers' weighted load-balancing loss and router z-loss (scalars summed
	// over blocks, not part of Loss); nil and 0 for dense models.
	LBLoss, RouterZLoss           *Tensor
	LBLossValue, RouterZLossValue float64
}

// Close releases the result's tensors. It is safe to call more than once and on nil, and
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (r *LossResult) Close() error {
	if r == nil {
		return nil
	}
	for _, t := range []*Tensor{r.Loss, r.CELoss, r.ZLoss, r.Logits, r.LBLoss, r.RouterZLoss} {
		t.Close()
	}
	return nil
}

// Loss runs the model and computes cross-entropy (plus the z-loss) against labels, which are
// not shifted: labels[b][t] is the target of position t. opts may be nil for the defaults.
func (m *Model) Loss(ids, labels *Tensor, opts *LossOptions) (*LossResult, error) {
	o := DefaultLossOptions()
	if opts != nil {
		o = *opts
	}
	var co C.olm_loss_options
	C.olm_loss_options_init_sized(&co, C.sizeof_olm_loss_options)
	co.ignore_index = C.int64_t(o.IgnoreIndex)
	co.loss_reduction = C.olm_loss_reduction(o.Reduction)
	co.z_loss_multiplier = C.double(o.ZLossMultiplier)
	co.loss_div_factor = C.double(o.LossDivFactor)
	if o.ReturnLogits {
		co.return_logits = 1
	}
	co.logits_to_keep = C.int64_t(o.LogitsToKeep)
	if o.CuDocLens != nil && o.CuDocLens.ptr() == nil {
		return nil, closedDocLens()
	}
	co.cu_doc_lens = o.CuDocLens.ptr()
	co.max_doc_len = C.int64_t(o.MaxDocLen)
	var res C.olm_loss_result
	res.struct_size = C.size_t(unsafe.Sizeof(res))
	err := takeError(C.olm_model_loss(m.ptr(), ids.ptr(), labels.ptr(), &co, &res))
	runtime.KeepAlive(m)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(labels)
	runtime.KeepAlive(o.CuDocLens)
	if err != nil {
		return nil, err
	}
	return &LossResult{Loss: newTensor(res.loss), CELoss: newTensor(res.ce_loss), ZLoss: newTensor(res.z_loss),
		Logits: newTensor(res.logits), LossValue: float64(res.loss_value), CELossValue: float64(res.ce_loss_value),
		ZLossValue: float64(res.z_loss_value), LBLoss: newTensor(res.lb_loss), RouterZLoss: newTensor(res.router_z_loss),
		LBLossValue: float64(res.lb_loss_value), RouterZLossValue: float64(res.router_z_loss_value)}, nil
}

// NumParams is the number of parameter elements.
func (m *Model) NumParams() (int64, error) {
	var n C.int64_t
	err := takeError(C.olm_model_num_params(m.ptr(), &n))
	runtime.KeepAlive(m)
	if err != nil {
		return 0, err
	}
	return int64(n), nil
}

// NormalizeMatrices renormalizes an nGPT model's embeddings and matrices to unit norm (the
// trainer does this after every step); ErrInvalidArgument for models whose config name is
// not "normalized".
func (m *Model) NormalizeMatrices() error {
	err := takeError(C.olm_model_normalize_matrices(m.ptr()))
	runtime.KeepAlive(m)
	return err
}

// ParameterInfo describes one parameter tensor (OLMo-core state-dict name).
type ParameterInfo struct {
	Name  string
	Dtype Dtype
	Shape []int64
	// Trainable is false when the config's freeze_params matches the name.
	Trainable bool
}

// Parameters lists the model's parameters in state-dict order.
func (m *Model) Parameters() ([]ParameterInfo, error) {
	var n C.size_t
	err := takeError(C.olm_model_parameter_count(m.ptr(), &n))
	runtime.KeepAlive(m)
	if err != nil {
		return nil, err
	}
	out := make([]ParameterInfo, 0, int(n))
	for i := C.size_t(0); i < n; i++ {
		var info C.olm_parameter_info
		info.struct_size = C.size_t(unsafe.Sizeof(info))
		if err := takeError(C.olm_model_parameter_info(m.ptr(), i, &info)); err != nil {
			runtime.KeepAlive(m)
			return nil, err
		}
		// The name and shape are borrowed from the model: copy them while it is alive.
		shape := make([]int64, int(info.ndim))
		if info.ndim > 0 {
			copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(info.shape)), int(info.ndim)))
		}
		out = append(out, ParameterInfo{Name: C.GoString(info.name), Dtype: Dtype(info.dtype), Shape: shape,
			Trainable: info.trainable != 0})
		runtime.KeepAlive(m)
	}
	return out, nil
}

// LoadSafetensors loads OLMo-core-named weights (dtypes are converted). The model is
// unchanged on error: ErrIO (unreadable file), ErrParse (malformed), ErrMismatch (missing,
// unexpected or wrongly shaped tensors).
func (m *Model) LoadSafetensors(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	err := takeError(C.olm_model_load_safetensors(m.ptr(), cpath))
	runtime.KeepAlive(m)
	return err
}

// SaveSafetensors writes the weights with OLMo-core names, atomically (a temporary file
// renamed over path).
func (m *Model) SaveSafetensors(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	err := takeError(C.olm_model_save_safetensors(m.ptr(), cpath))
	runtime.KeepAlive(m)
	return err
}

// GenerateOptions configures Generate. Start from DefaultGenerateOptions.
type GenerateOptions struct {
	MaxNewTokens int64
	Temperature  float64 // 0: greedy
	TopK         int64   // 0: off
	TopP         float64 // 1: off
	Seed         uint64
	StopTokens   []int64
	UseKVCache   bool
	// OnToken, when set, sees each token as it is produced; returning false stops.
	OnToken func(token int64) bool
}

// DefaultGenerateOptions are libolm's defaults.
func DefaultGenerateOptions() GenerateOptions {
	var o C.olm_generate_options
	C.olm_generate_options_init_sized(&o, C.sizeof_olm_generate_options)
	return GenerateOptions{MaxNewTokens: int64(o.max_new_tokens), Temperature: float64(o.temperature),
		TopK: int64(o.top_k), TopP: float64(o.top_p), Seed: uint64(o.seed), UseKVCache: o.use_kv_cache != 0}
}

// Generate samples tokens after prompt (shape (T,) or (1, T)) and returns them.
// GenerateContext can also be cancelled.
func (m *Model) Generate(prompt *Tensor, opts *GenerateOptions) ([]int64, error) {
	return m.GenerateContext(context.Background(), prompt, opts)
}

// GenerateContext is Generate that stops when ctx is done: libolm asks the token callback
// after every token whether to go on, so generation stops after the token being produced
// when ctx is cancelled, and GenerateContext returns the tokens generated so far together
// with ctx.Err(). A ctx that is already done returns ctx.Err() before generating.
func (m *Model) GenerateContext(ctx context.Context, prompt *Tensor, opts *GenerateOptions) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := DefaultGenerateOptions()
	if opts != nil {
		o = *opts
	}
	cancelled := false
	if ctx.Done() != nil { // a context that can be cancelled: ask it after every token
		user := o.OnToken
		o.OnToken = func(token int64) bool {
			if user != nil && !user(token) {
				return false
			}
			if ctx.Err() != nil {
				cancelled = true
				return false
			}
			return true
		}
	}
	var co C.olm_generate_options
	C.olm_generate_options_init_sized(&co, C.sizeof_olm_generate_options)
	co.max_new_tokens = C.int64_t(o.MaxNewTokens)
	co.temperature = C.double(o.Temperature)
	co.top_k = C.int64_t(o.TopK)
	co.top_p = C.double(o.TopP)
	co.seed = C.uint64_t(o.Seed)
	co.use_kv_cache = 0
	if o.UseKVCache {
		co.use_kv_cache = 1
	}
	// Stop tokens live in C memory: C must not hold Go pointers inside structs it reads.
	if len(o.StopTokens) > 0 {
		p := C.malloc(C.size_t(len(o.StopTokens) * 8))
		defer C.free(p)
		copy(unsafe.Slice((*int64)(p), len(o.StopTokens)), o.StopTokens)
		co.stop_tokens = (*C.int64_t)(p)
		co.num_stop_tokens = C.size_t(len(o.StopTokens))
	}
	var handle cgo.Handle
	var state *callbackState
	if o.OnToken != nil {
		state = &callbackState{onToken: o.OnToken}
		handle = cgo.NewHandle(state)
		defer handle.Delete()
	}
	var out *C.olm_tensor
	err := takeError(C.olm_go_generate(m.ptr(), prompt.ptr(), &co, C.uintptr_t(handle), &out))
	runtime.KeepAlive(m)
	runtime.KeepAlive(prompt)
	if err != nil {
		return nil, err
	}
	t := newTensor(out)
	defer t.Close()
	if state != nil && state.panicked != nil {
		panic(state.panicked)
	}
	tokens, err := t.Int64s()
	if tokens == nil && err == nil {
		tokens = []int64{}
	}
	if err == nil && cancelled {
		err = ctx.Err()
	}
	return tokens, err
}

// Close releases the model (a Trainer keeps its own reference). Safe to call twice and on nil; it
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (m *Model) Close() error {
	if m != nil && m.c != nil {
		C.olm_model_free(m.c)
		m.c = nil
		liveModels.Add(-1)
		runtime.SetFinalizer(m, nil)
	}
	return nil
}
