package olm

/*
#include <olm.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Dtype is a tensor element type (the OLM_DTYPE_* values).
type Dtype int32

const (
	Int32    Dtype = C.OLM_DTYPE_INT32
	Int64    Dtype = C.OLM_DTYPE_INT64
	Float32  Dtype = C.OLM_DTYPE_FLOAT32
	BFloat16 Dtype = C.OLM_DTYPE_BFLOAT16
	Float16  Dtype = C.OLM_DTYPE_FLOAT16

	// ConfigDtype, in ModelOptions.ParamDtype, takes the config's dtype.
	ConfigDtype Dtype = -1
)

func (d Dtype) String() string {
	switch d {
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case Float32:
		return "float32"
	case BFloat16:
		return "bfloat16"
	case Float16:
		return "float16"
	case ConfigDtype:
		return "config dtype"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// MaxDims is the most dimensions a tensor may have.
const MaxDims = C.OLM_MAX_DIMS

// Tensor is a dense tensor owned by libolm, on the host or a device. Constructors copy Go
// data in; Float32s, Int64s and Int32s copy it out. Close releases it (device memory
// included) at once.
type Tensor struct {
	c *C.olm_tensor
}

// liveTensors counts the tensors this package has wrapped and not yet released (by Close or
// the finalizer); the tests use it to check the finalizer backstop.
var liveTensors atomic.Int64

// newTensor wraps a tensor the caller owns; nil for NULL.
func newTensor(c *C.olm_tensor) *Tensor {
	if c == nil {
		return nil
	}
	t := &Tensor{c: c}
	liveTensors.Add(1)
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t
}

// ptr is the C handle; NULL for a nil or closed tensor (the library then reports
// ErrInvalidArgument).
func (t *Tensor) ptr() *C.olm_tensor {
	if t == nil {
		return nil
	}
	return t.c
}

// newTensorFrom copies nbytes at data into a new tensor. data and shape are Go memory the
// library reads during the call only.
func newTensorFrom(dtype Dtype, data unsafe.Pointer, nbytes int, shape []int64) (*Tensor, error) {
	var shapePtr *C.int64_t
	if len(shape) > 0 {
		shapePtr = (*C.int64_t)(unsafe.Pointer(&shape[0]))
	}
	var out *C.olm_tensor
	err := takeError(C.olm_tensor_create(C.olm_dtype(dtype), shapePtr, C.size_t(len(shape)), data, C.size_t(nbytes), &out))
	runtime.KeepAlive(shape)
	if err != nil {
		return nil, err
	}
	return newTensor(out), nil
}

// NewTensorInt64 copies data into a new int64 host tensor of the given shape (no shape: a
// scalar). len(data) must equal the product of the shape.
func NewTensorInt64(data []int64, shape ...int64) (*Tensor, error) {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	t, err := newTensorFrom(Int64, p, len(data)*8, shape)
	runtime.KeepAlive(data)
	return t, err
}

// NewTensorInt32 copies data into a new int32 host tensor of the given shape.
func NewTensorInt32(data []int32, shape ...int64) (*Tensor, error) {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	t, err := newTensorFrom(Int32, p, len(data)*4, shape)
	runtime.KeepAlive(data)
	return t, err
}

// NewTensorFloat32 copies data into a new float32 host tensor of the given shape.
func NewTensorFloat32(data []float32, shape ...int64) (*Tensor, error) {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	t, err := newTensorFrom(Float32, p, len(data)*4, shape)
	runtime.KeepAlive(data)
	return t, err
}

// Dtype is the element type.
func (t *Tensor) Dtype() (Dtype, error) {
	var d C.olm_dtype
	err := takeError(C.olm_tensor_dtype(t.ptr(), &d))
	runtime.KeepAlive(t)
	if err != nil {
		return 0, err
	}
	return Dtype(d), nil
}

// Shape is the tensor's dimensions (empty for a scalar).
func (t *Tensor) Shape() ([]int64, error) {
	var n C.size_t
	err := takeError(C.olm_tensor_ndim(t.ptr(), &n))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	var shape [C.OLM_MAX_DIMS]int64
	if n > C.OLM_MAX_DIMS {
		return nil, &Error{Code: ErrInternal, Message: fmt.Sprintf("tensor: ndim %d exceeds OLM_MAX_DIMS", n)}
	}
	err = takeError(C.olm_tensor_shape(t.ptr(), (*C.int64_t)(unsafe.Pointer(&shape[0])), C.OLM_MAX_DIMS))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	return append([]int64{}, shape[:n]...), nil
}

// NumBytes is the number of bytes the elements occupy (numel times element size).
func (t *Tensor) NumBytes() (int, error) {
	var n C.size_t
	err := takeError(C.olm_tensor_nbytes(t.ptr(), &n))
	runtime.KeepAlive(t)
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// copyOut checks the dtype, then copies the elements into a slice made by alloc(numel),
// which returns the slice's first byte.
func (t *Tensor) copyOut(want Dtype, elemSize int, alloc func(n int) unsafe.Pointer) error {
	d, err := t.Dtype()
	if err != nil {
		return err
	}
	if d != want {
		return &Error{Code: ErrInvalidArgument, Message: fmt.Sprintf("tensor: dtype is %v, not %v", d, want)}
	}
	nbytes, err := t.NumBytes()
	if err != nil {
		return err
	}
	n := nbytes / elemSize
	dst := alloc(n)
	if n == 0 {
		return nil
	}
	err = takeError(C.olm_tensor_copy_to_host(t.ptr(), dst, C.size_t(nbytes)))
	runtime.KeepAlive(t)
	return err
}

// copyOutAs copies the tensor's elements into a new []T; dtype names T's C element type.
func copyOutAs[T float32 | int64 | int32](t *Tensor, dtype Dtype) ([]T, error) {
	var out []T
	var zero T
	err := t.copyOut(dtype, int(unsafe.Sizeof(zero)), func(n int) unsafe.Pointer {
		out = make([]T, n)
		if n == 0 {
			return nil
		}
		return unsafe.Pointer(&out[0])
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Float32s copies a float32 tensor's elements out, row-major (from any device).
func (t *Tensor) Float32s() ([]float32, error) { return copyOutAs[float32](t, Float32) }

// Int64s copies an int64 tensor's elements out, row-major (from any device).
func (t *Tensor) Int64s() ([]int64, error) { return copyOutAs[int64](t, Int64) }

// Int32s copies an int32 tensor's elements out, row-major (from any device).
func (t *Tensor) Int32s() ([]int32, error) { return copyOutAs[int32](t, Int32) }

// Close releases the tensor. It is safe to call more than once and on nil, and
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (t *Tensor) Close() error {
	if t != nil && t.c != nil {
		C.olm_tensor_free(t.c)
		t.c = nil
		liveTensors.Add(-1)
		runtime.SetFinalizer(t, nil)
	}
	return nil
}
