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
	"unsafe"
)

// TrainConfig is a validated training configuration (schema/olm.fbs TrainConfig).
type TrainConfig struct {
	c *C.olm_train_config
}

// ptr is the C handle; NULL for a nil or closed train config.
func (t *TrainConfig) ptr() *C.olm_train_config {
	if t == nil {
		return nil
	}
	return t.c
}

func newTrainConfig(c *C.olm_train_config) *TrainConfig {
	t := &TrainConfig{c: c}
	runtime.SetFinalizer(t, (*TrainConfig).Close)
	return t
}

// TrainConfigFromJSON parses and validates a JSON training configuration.
func TrainConfigFromJSON(text string) (*TrainConfig, error) {
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	var out *C.olm_train_config
	if err := takeError(C.olm_train_config_from_json(ctext, C.size_t(len(text)), &out)); err != nil {
		return nil, err
	}
	return newTrainConfig(out), nil
}

// TrainConfigFromFlatBuffer verifies a binary training configuration (identifier "OLMT").
func TrainConfigFromFlatBuffer(data []byte) (*TrainConfig, error) {
	var out *C.olm_train_config
	err := takeError(C.olm_train_config_from_flatbuffer(bytesPtr(data), C.size_t(len(data)), &out))
	runtime.KeepAlive(data)
	if err != nil {
		return nil, err
	}
	return newTrainConfig(out), nil
}

// JSON serializes the training configuration.
func (t *TrainConfig) JSON() (string, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_train_config_to_json(t.ptr(), &buf))
	runtime.KeepAlive(t)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(buf)), nil
}

// FlatBuffer serializes the training configuration.
func (t *TrainConfig) FlatBuffer() ([]byte, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_train_config_to_flatbuffer(t.ptr(), &buf))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	return takeBuffer(buf), nil
}

// Model is the model configuration the training configuration names.
func (t *TrainConfig) Model() (*Config, error) {
	var out *C.olm_config
	err := takeError(C.olm_train_config_model(t.ptr(), &out))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// Close releases the training configuration. Safe to call twice and on nil; it
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (t *TrainConfig) Close() error {
	if t != nil && t.c != nil {
		C.olm_train_config_free(t.c)
		t.c = nil
		runtime.SetFinalizer(t, nil)
	}
	return nil
}

// EvalMetrics is a validation loss.
type EvalMetrics struct {
	Loss       float64
	Perplexity float64
	Tokens     int64
}

// Trainer trains a model in place (it keeps the model alive).
type Trainer struct {
	c *C.olm_trainer
}

// ptr is the C handle; NULL for a nil or closed trainer.
func (t *Trainer) ptr() *C.olm_trainer {
	if t == nil {
		return nil
	}
	return t.c
}

// NewTrainer creates a trainer for a model.
func NewTrainer(m *Model, cfg *TrainConfig) (*Trainer, error) {
	var out *C.olm_trainer
	err := takeError(C.olm_trainer_create(m.ptr(), cfg.ptr(), &out))
	runtime.KeepAlive(m)
	runtime.KeepAlive(cfg)
	if err != nil {
		return nil, err
	}
	t := &Trainer{c: out}
	runtime.SetFinalizer(t, (*Trainer).Close)
	return t, nil
}

// Step takes one optimizer step; labels may be nil for OLMo-core's shifted labels.
func (t *Trainer) Step(ids, labels *Tensor) (StepMetrics, error) {
	var m C.olm_step_metrics
	m.struct_size = C.size_t(unsafe.Sizeof(m))
	err := takeError(C.olm_trainer_step(t.ptr(), ids.ptr(), labels.ptr(), &m))
	runtime.KeepAlive(t)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(labels)
	if err != nil {
		return StepMetrics{}, err
	}
	return stepMetricsFromC(&m), nil
}

// StepDocuments is Step with intra-document masking: cuDocLens as ForwardOptions.CuDocLens
// (a Batch's CuDocLens qualifies); nil steps without masking.
func (t *Trainer) StepDocuments(ids, labels, cuDocLens *Tensor) (StepMetrics, error) {
	if cuDocLens != nil && cuDocLens.ptr() == nil {
		return StepMetrics{}, closedDocLens()
	}
	var m C.olm_step_metrics
	m.struct_size = C.size_t(unsafe.Sizeof(m))
	err := takeError(C.olm_trainer_step_documents(t.ptr(), ids.ptr(), labels.ptr(), cuDocLens.ptr(), &m))
	runtime.KeepAlive(t)
	runtime.KeepAlive(ids)
	runtime.KeepAlive(labels)
	runtime.KeepAlive(cuDocLens)
	if err != nil {
		return StepMetrics{}, err
	}
	return stepMetricsFromC(&m), nil
}

// SaveCheckpoint writes <folder>/step<N> atomically and returns its path. With a process
// group (SetDist) it is a collective that every rank calls: each rank writes its shard
// (rank<r>.safetensors) and the checkpoint appears once all have finished.
func (t *Trainer) SaveCheckpoint(folder string) (string, error) {
	cfolder := C.CString(folder)
	defer C.free(unsafe.Pointer(cfolder))
	var buf *C.olm_buffer
	err := takeError(C.olm_trainer_save_checkpoint(t.ptr(), cfolder, &buf))
	runtime.KeepAlive(t)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(buf)), nil
}

// LoadCheckpoint restores a checkpoint directory or a save folder's newest checkpoint,
// single-process or sharded (at any world size).
func (t *Trainer) LoadCheckpoint(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	err := takeError(C.olm_trainer_load_checkpoint(t.ptr(), cpath))
	runtime.KeepAlive(t)
	return err
}

// FitOptions configures Fit.
type FitOptions struct {
	EvalData *Dataset
	// OnStep sees each step's metrics; returning false stops training cleanly.
	OnStep func(StepMetrics) bool
	OnLog  func(message string)
	// DocumentMasking switches intra-document masking (from the datasets' document
	// boundaries) on or off for training and evaluation; nil follows the train config
	// (data.generate_doc_lengths, eval_data.generate_doc_lengths).
	DocumentMasking *bool
}

// Fit trains until the config's max_steps (or until OnStep returns false) and returns the
// last evaluation. A nil data trains on the train config's `data` section (and, without
// opts.EvalData, evaluates its `eval_data`), the run `olm train` makes from the same JSON.
// FitContext can also be cancelled, for example from signal.NotifyContext to stop on SIGTERM
// with a checkpoint as `olm train` does.
func (t *Trainer) Fit(data *Dataset, opts *FitOptions) (EvalMetrics, error) {
	return t.FitContext(context.Background(), data, opts)
}

// FitContext is Fit that stops when ctx is done: libolm asks the step callback after every
// optimizer step whether to go on, so training stops cleanly after the step that is running
// when ctx is cancelled (saving a checkpoint first when the config has a save_folder), and
// FitContext returns ctx.Err(). A ctx that is already done returns ctx.Err() before
// training starts. With a process group, cancel every rank's context: a rank that stops
// alone leaves the others waiting in a collective until the group's timeout.
func (t *Trainer) FitContext(ctx context.Context, data *Dataset, opts *FitOptions) (EvalMetrics, error) {
	if err := ctx.Err(); err != nil {
		return EvalMetrics{}, err
	}
	var co C.olm_fit_options
	C.olm_fit_options_init_sized(&co, C.sizeof_olm_fit_options)
	var onStep func(StepMetrics) bool
	var onLog func(string)
	if opts != nil {
		co.eval_data = opts.EvalData.ptr()
		if opts.DocumentMasking != nil {
			co.document_masking = 0
			if *opts.DocumentMasking {
				co.document_masking = 1
			}
		}
		onStep, onLog = opts.OnStep, opts.OnLog
	}
	cancelled := false
	if ctx.Done() != nil { // a context that can be cancelled: ask it after every step
		user := onStep
		onStep = func(m StepMetrics) bool {
			if user != nil && !user(m) {
				return false
			}
			if ctx.Err() != nil {
				cancelled = true
				return false
			}
			return true
		}
	}
	var handle cgo.Handle
	var state *callbackState
	if onStep != nil || onLog != nil {
		state = &callbackState{onStep: onStep, onLog: onLog}
		handle = cgo.NewHandle(state)
		defer handle.Delete()
	}
	var out C.olm_eval_metrics
	out.struct_size = C.size_t(unsafe.Sizeof(out))
	err := takeError(C.olm_go_fit(t.ptr(), data.ptr(), &co, C.uintptr_t(handle), &out))
	runtime.KeepAlive(t)
	runtime.KeepAlive(data)
	runtime.KeepAlive(opts)
	if state != nil && state.panicked != nil {
		panic(state.panicked)
	}
	metrics := EvalMetrics{Loss: float64(out.loss), Perplexity: float64(out.perplexity), Tokens: int64(out.tokens)}
	if err == nil && cancelled {
		err = ctx.Err()
	}
	return metrics, err
}

// Evaluate is the mean loss over a dataset (maxBatches 0: all of it).
func (t *Trainer) Evaluate(data *Dataset, maxBatches int64) (EvalMetrics, error) {
	return t.EvaluateContext(context.Background(), data, maxBatches)
}

// EvaluateContext is Evaluate that honours ctx as far as libolm allows:
// olm_trainer_evaluate takes no callback, so it cannot be interrupted once started. A ctx
// that is already done returns ctx.Err() without evaluating; a cancellation during the
// evaluation takes effect when it returns (the complete result is returned, with a nil
// error). Bound the work with maxBatches where that matters.
func (t *Trainer) EvaluateContext(ctx context.Context, data *Dataset, maxBatches int64) (EvalMetrics, error) {
	if err := ctx.Err(); err != nil {
		return EvalMetrics{}, err
	}
	var out C.olm_eval_metrics
	out.struct_size = C.size_t(unsafe.Sizeof(out))
	err := takeError(C.olm_trainer_evaluate(t.ptr(), data.ptr(), C.int64_t(maxBatches), &out))
	runtime.KeepAlive(t)
	runtime.KeepAlive(data)
	return EvalMetrics{Loss: float64(out.loss), Perplexity: float64(out.perplexity), Tokens: int64(out.tokens)}, err
}

// Close releases the trainer. Safe to call twice and on nil; it
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (t *Trainer) Close() error {
	if t != nil && t.c != nil {
		C.olm_trainer_free(t.c)
		t.c = nil
		runtime.SetFinalizer(t, nil)
	}
	return nil
}
