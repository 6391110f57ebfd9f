package olm

/*
#include <stdlib.h>
#include <olm.h>
#include "helpers.h"
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// Model is a transformer language model.
type Model struct {
	c *C.olm_model
}

// ModelOptions configures NewModel. Start from DefaultModelOptions.
type ModelOptions struct {
	ParamDtype  Dtype // -1: the config's dtype; Float32 or BFloat16
	InitWeights bool  // initialize with the config's init method and seed
}

// DefaultModelOptions are libolm's defaults.
func DefaultModelOptions() ModelOptions {
	var o C.olm_model_options
	C.olm_model_options_init(&o)
	return ModelOptions{ParamDtype: Dtype(o.param_dtype), InitWeights: o.init_weights != 0}
}

// NewModel builds a model on "cpu", "cuda" or "cuda:N". opts may be nil.
func NewModel(cfg *Config, device string, opts *ModelOptions) (*Model, error) {
	var o C.olm_model_options
	C.olm_model_options_init(&o)
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
	err := takeError(C.olm_model_create(cfg.c, cdev, &o, &out))
	runtime.KeepAlive(cfg)
	if err != nil {
		return nil, err
	}
	m := &Model{c: out}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Forward returns float32 logits (batch, positions, vocab) for int32/int64 ids (batch, seq).
// logitsToKeep > 0 keeps only the last positions.
func (m *Model) Forward(ids *Tensor, logitsToKeep int64) (*Tensor, error) {
	var o C.olm_forward_options
	C.olm_forward_options_init(&o)
	o.logits_to_keep = C.int64_t(logitsToKeep)
	var out *C.olm_tensor
	err := takeError(C.olm_model_forward(m.c, ids.c, &o, &out))
	runtime.KeepAlive(m)
	runtime.KeepAlive(ids)
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

// LossOptions configures Loss. Start from DefaultLossOptions.
type LossOptions struct {
	IgnoreIndex     int64
	Reduction       Reduction
	ZLossMultiplier float64 // 0 disables the z-loss
	LossDivFactor   float64
	ReturnLogits    bool
	LogitsToKeep    int64
}

// DefaultLossOptions are libolm's defaults (ignore -100, mean, no z-loss, divide by 1).
func DefaultLossOptions() LossOptions {
	var o C.olm_loss_options
	C.olm_loss_options_init(&o)
	return LossOptions{IgnoreIndex: int64(o.ignore_index), Reduction: Reduction(o.loss_reduction),
		ZLossMultiplier: float64(o.z_loss_multiplier), LossDivFactor: float64(o.loss_div_factor),
		ReturnLogits: o.return_logits != 0, LogitsToKeep: int64(o.logits_to_keep)}
}

// LossResult holds the losses (tensors and, for mean/sum, numbers). Close releases them.
type LossResult struct {
	Loss, CELoss, ZLoss, Logits        *Tensor // ZLoss and Logits may be nil
	LossValue, CELossValue, ZLossValue float64
}

// Close releases the result's tensors.
func (r *LossResult) Close() {
	for _, t := range []*Tensor{r.Loss, r.CELoss, r.ZLoss, r.Logits} {
		t.Close()
	}
}

// Loss runs the model and computes cross-entropy (+ z-loss) against labels (not shifted).
func (m *Model) Loss(ids, labels *Tensor, opts *LossOptions) (*LossResult, error) {
	o := DefaultLossOptions()
	if opts != nil {
		o = *opts
	}
	var co C.olm_loss_options
	C.olm_loss_options_init(&co)
	co.ignore_index = C.int64_t(o.IgnoreIndex)
	co.loss_reduction = C.olm_loss_reduction(o.Reduction)
	co.z_loss_multiplier = C.double(o.ZLossMultiplier)
	co.loss_div_factor = C.double(o.LossDivFactor)
	if o.ReturnLogits {
		co.return_logits = 1
	}
	co.logits_to_keep = C.int64_t(o.LogitsToKeep)
	var res C.olm_loss_result
	res.struct_size = C.size_t(unsafe.Sizeof(res))
	err := takeError(C.olm_model_loss(m.c, ids.c, labels.c, &co, &res))
	runtime.KeepAlive(m)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(labels)
	if err != nil {
		return nil, err
	}
	return &LossResult{Loss: newTensor(res.loss), CELoss: newTensor(res.ce_loss), ZLoss: newTensor(res.z_loss),
		Logits: newTensor(res.logits), LossValue: float64(res.loss_value), CELossValue: float64(res.ce_loss_value),
		ZLossValue: float64(res.z_loss_value)}, nil
}

// NumParams is the number of parameter elements.
func (m *Model) NumParams() (int64, error) {
	var n C.int64_t
	err := takeError(C.olm_model_num_params(m.c, &n))
	runtime.KeepAlive(m)
	return int64(n), err
}

// ParameterInfo describes one parameter tensor (OLMo-core state-dict name).
type ParameterInfo struct {
	Name  string
	Dtype Dtype
	Shape []int64
}

// Parameters lists the model's parameters in state-dict order.
func (m *Model) Parameters() ([]ParameterInfo, error) {
	defer runtime.KeepAlive(m)
	var n C.size_t
	if err := takeError(C.olm_model_parameter_count(m.c, &n)); err != nil {
		return nil, err
	}
	out := make([]ParameterInfo, 0, int(n))
	for i := C.size_t(0); i < n; i++ {
		var info C.olm_parameter_info
		info.struct_size = C.size_t(unsafe.Sizeof(info))
		if err := takeError(C.olm_model_parameter_info(m.c, i, &info)); err != nil {
			return nil, err
		}
		shape := make([]int64, int(info.ndim))
		if info.ndim > 0 {
			copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(info.shape)), int(info.ndim)))
		}
		out = append(out, ParameterInfo{Name: C.GoString(info.name), Dtype: Dtype(info.dtype), Shape: shape})
	}
	return out, nil
}

// LoadSafetensors loads OLMo-core-named weights; the model is unchanged on error.
func (m *Model) LoadSafetensors(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	err := takeError(C.olm_model_load_safetensors(m.c, cpath))
	runtime.KeepAlive(m)
	return err
}

// SaveSafetensors writes the weights atomically with OLMo-core names.
func (m *Model) SaveSafetensors(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	err := takeError(C.olm_model_save_safetensors(m.c, cpath))
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
	C.olm_generate_options_init(&o)
	return GenerateOptions{MaxNewTokens: int64(o.max_new_tokens), Temperature: float64(o.temperature),
		TopK: int64(o.top_k), TopP: float64(o.top_p), Seed: uint64(o.seed), UseKVCache: o.use_kv_cache != 0}
}

// Generate samples tokens after prompt (shape (T,) or (1, T)) and returns them.
func (m *Model) Generate(prompt *Tensor, opts *GenerateOptions) ([]int64, error) {
	o := DefaultGenerateOptions()
	if opts != nil {
		o = *opts
	}
	var co C.olm_generate_options
	C.olm_generate_options_init(&co)
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
	err := takeError(C.olm_go_generate(m.c, prompt.c, &co, C.uintptr_t(handle), &out))
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
	return tokens, err
}

// Close releases the model (a Trainer keeps its own reference). Safe to call twice.
func (m *Model) Close() {
	if m != nil && m.c != nil {
		C.olm_model_free(m.c)
		m.c = nil
		runtime.SetFinalizer(m, nil)
	}
}
