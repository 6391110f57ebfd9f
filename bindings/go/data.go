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

// DatasetOptions configures a Dataset. SequenceLength and VocabSize are required.
type DatasetOptions struct {
	SequenceLength int64
	VocabSize      int64
	EOSTokenID     int64 // -1: no documents
	MaskedTokenIDs []int64
	RawDtype       string // "uint16" (default) or "uint32"
}

// DefaultDatasetOptions returns libolm's defaults for the given shape.
func DefaultDatasetOptions(sequenceLength, vocabSize int64) DatasetOptions {
	return DatasetOptions{SequenceLength: sequenceLength, VocabSize: vocabSize, EOSTokenID: -1, RawDtype: "uint16"}
}

// Dataset is a token stream cut into fixed-length instances.
type Dataset struct {
	c *C.olm_dataset
}

// withOptions builds C options whose strings and arrays live in C memory for the call.
func withOptions(o DatasetOptions, f func(*C.olm_dataset_options) error) error {
	var co C.olm_dataset_options
	C.olm_dataset_options_init_sized(&co, C.sizeof_olm_dataset_options)
	co.sequence_length = C.int64_t(o.SequenceLength)
	co.vocab_size = C.int64_t(o.VocabSize)
	co.eos_token_id = C.int64_t(o.EOSTokenID)
	if o.RawDtype != "" {
		cs := C.CString(o.RawDtype)
		defer C.free(unsafe.Pointer(cs))
		co.raw_dtype = cs
	}
	if len(o.MaskedTokenIDs) > 0 {
		p := C.malloc(C.size_t(len(o.MaskedTokenIDs) * 8))
		defer C.free(p)
		copy(unsafe.Slice((*int64)(p), len(o.MaskedTokenIDs)), o.MaskedTokenIDs)
		co.masked_token_ids = (*C.int64_t)(p)
		co.num_masked_token_ids = C.size_t(len(o.MaskedTokenIDs))
	}
	return f(&co)
}

// ptr is the C handle; NULL for a nil or closed dataset.
func (d *Dataset) ptr() *C.olm_dataset {
	if d == nil {
		return nil
	}
	return d.c
}

func newDataset(c *C.olm_dataset) *Dataset {
	d := &Dataset{c: c}
	runtime.SetFinalizer(d, (*Dataset).Close)
	return d
}

// DatasetFromTokens builds a dataset from token ids (copied).
func DatasetFromTokens(tokens []int64, o DatasetOptions) (*Dataset, error) {
	var out *C.olm_dataset
	err := withOptions(o, func(co *C.olm_dataset_options) error {
		buf := tokens
		if len(buf) == 0 {
			buf = []int64{0}
		}
		p := (*C.int64_t)(unsafe.Pointer(&buf[0]))
		return takeError(C.olm_dataset_from_tokens(p, C.size_t(len(tokens)), co, &out))
	})
	runtime.KeepAlive(tokens)
	if err != nil {
		return nil, err
	}
	return newDataset(out), nil
}

// DatasetFromFiles memory-maps raw uint16/uint32 token files and .npy files as one stream.
func DatasetFromFiles(paths []string, o DatasetOptions) (*Dataset, error) {
	cpaths := C.malloc(C.size_t(len(paths)+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	defer C.free(cpaths)
	slots := unsafe.Slice((**C.char)(cpaths), len(paths)+1)
	for i, p := range paths {
		slots[i] = C.CString(p)
		defer C.free(unsafe.Pointer(slots[i]))
	}
	var out *C.olm_dataset
	err := withOptions(o, func(co *C.olm_dataset_options) error {
		return takeError(C.olm_dataset_from_files((**C.char)(cpaths), C.size_t(len(paths)), co, &out))
	})
	if err != nil {
		return nil, err
	}
	return newDataset(out), nil
}

// Size is the number of tokens and of instances.
func (d *Dataset) Size() (tokens, instances int64, err error) {
	var t, n C.int64_t
	err = takeError(C.olm_dataset_size(d.ptr(), &t, &n))
	runtime.KeepAlive(d)
	return int64(t), int64(n), err
}

// Batch holds a batch's tensors; Close releases them.
type Batch struct {
	InputIDs, Labels, CuDocLens *Tensor // CuDocLens is nil without an EOS token
	MaxDocLen                   int64
}

// Close releases the batch's tensors. It is safe to call more than once and on nil, and
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (b *Batch) Close() error {
	if b == nil {
		return nil
	}
	b.InputIDs.Close()
	b.Labels.Close()
	b.CuDocLens.Close()
	return nil
}

// Batch builds a batch from instance indices.
func (d *Dataset) Batch(indices []int64) (*Batch, error) {
	var b C.olm_batch
	b.struct_size = C.size_t(unsafe.Sizeof(b))
	buf := indices
	if len(buf) == 0 {
		buf = []int64{0}
	}
	p := (*C.int64_t)(unsafe.Pointer(&buf[0]))
	err := takeError(C.olm_dataset_batch(d.ptr(), p, C.size_t(len(indices)), &b))
	runtime.KeepAlive(d)
	runtime.KeepAlive(indices)
	if err != nil {
		return nil, err
	}
	return &Batch{InputIDs: newTensor(b.input_ids), Labels: newTensor(b.labels), CuDocLens: newTensor(b.cu_doc_lens),
		MaxDocLen: int64(b.max_doc_len)}, nil
}

// Close releases the dataset. Safe to call twice and on nil; it
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (d *Dataset) Close() error {
	if d != nil && d.c != nil {
		C.olm_dataset_free(d.c)
		d.c = nil
		runtime.SetFinalizer(d, nil)
	}
	return nil
}
