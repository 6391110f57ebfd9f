package olm

/*
#include <stdlib.h>
#include <olm.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// HFLoadOptions configures ModelFromHFDir and ConfigFromHFDir. Start from
// DefaultHFLoadOptions.
type HFLoadOptions struct {
	// ConfigDtype (the default): config.json's torch_dtype (float16 models load as
	// float32); or Float32, BFloat16.
	Dtype  Dtype
	Device string // "cpu" (the default), "cuda" or "cuda:N"
}

// DefaultHFLoadOptions are libolm's defaults (olm_hf_load_options_init).
func DefaultHFLoadOptions() HFLoadOptions {
	var o C.olm_hf_load_options
	C.olm_hf_load_options_init_sized(&o, C.sizeof_olm_hf_load_options)
	return HFLoadOptions{Dtype: Dtype(o.dtype), Device: "cpu"}
}

// loadOptions fills the C struct; the caller frees the returned device string.
func loadOptions(opts *HFLoadOptions) (C.olm_hf_load_options, *C.char) {
	var o C.olm_hf_load_options
	C.olm_hf_load_options_init_sized(&o, C.sizeof_olm_hf_load_options)
	var cdev *C.char
	if opts != nil {
		o.dtype = C.olm_dtype(opts.Dtype)
		if opts.Device != "" {
			cdev = C.CString(opts.Device)
			o.device = cdev
		}
	}
	return o, cdev
}

// ConfigFromHFDir reads a Hugging Face model directory's config.json as an olm config,
// without reading weights. Fields olm cannot express are refused naming them
// (ErrInvalidConfig). opts may be nil.
func ConfigFromHFDir(dir string, opts *HFLoadOptions) (*Config, error) {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	o, cdev := loadOptions(opts)
	defer C.free(unsafe.Pointer(cdev))
	var out *C.olm_config
	if err := takeError(C.olm_config_from_hf_dir(cdir, &o, &out)); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// ModelFromHFDir loads a Hugging Face model directory (model.safetensors, or the shards its
// model.safetensors.index.json lists). Every file is checked against config.json and the
// index before any weight is copied; errors name the file and the tensor or field (ErrIO for
// a missing shard, ErrMismatch for tensors that do not fit, ErrInvalidConfig, ErrParse).
// opts may be nil.
func ModelFromHFDir(dir string, opts *HFLoadOptions) (*Model, error) {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	o, cdev := loadOptions(opts)
	defer C.free(unsafe.Pointer(cdev))
	var out *C.olm_model
	if err := takeError(C.olm_model_from_hf_dir(cdir, &o, &out)); err != nil {
		return nil, err
	}
	m := &Model{c: out}
	liveModels.Add(1)
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// HFSaveOptions configures SaveHFDir. Start from DefaultHFSaveOptions.
type HFSaveOptions struct {
	MaxShardBytes      int64  // the largest weight file (default 5 GiB)
	TokenizerSourceDir string // a directory whose tokenizer files are copied along; "": none
	Dtype              Dtype  // the files' dtype; ConfigDtype (the default): the model's
	BOSTokenID         int64  // -1 (the default): unknown
	EOSTokenID         int64  // -1 (the default): unknown
}

// DefaultHFSaveOptions are libolm's defaults (olm_hf_save_options_init).
func DefaultHFSaveOptions() HFSaveOptions {
	var o C.olm_hf_save_options
	C.olm_hf_save_options_init_sized(&o, C.sizeof_olm_hf_save_options)
	return HFSaveOptions{MaxShardBytes: int64(o.max_shard_bytes), Dtype: Dtype(o.dtype),
		BOSTokenID: int64(o.bos_token_id), EOSTokenID: int64(o.eos_token_id)}
}

// SaveHFDir writes the model as a Hugging Face model directory that transformers'
// AutoModelForCausalLM.from_pretrained loads. dir must not exist or be empty; it appears
// complete or not at all. A model no supported transformers class computes is refused naming
// the feature (ErrInvalidConfig). opts may be nil.
func (m *Model) SaveHFDir(dir string, opts *HFSaveOptions) error {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	var o C.olm_hf_save_options
	C.olm_hf_save_options_init_sized(&o, C.sizeof_olm_hf_save_options)
	if opts != nil {
		o.max_shard_bytes = C.int64_t(opts.MaxShardBytes)
		o.dtype = C.olm_dtype(opts.Dtype)
		o.bos_token_id = C.int64_t(opts.BOSTokenID)
		o.eos_token_id = C.int64_t(opts.EOSTokenID)
		if opts.TokenizerSourceDir != "" {
			ctok := C.CString(opts.TokenizerSourceDir)
			defer C.free(unsafe.Pointer(ctok))
			o.tokenizer_source_dir = ctok
		}
	}
	err := takeError(C.olm_model_save_hf_dir(m.ptr(), cdir, &o))
	runtime.KeepAlive(m)
	return err
}
