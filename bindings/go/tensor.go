package olm

/*
#include <olm.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Dtype is a tensor element type (OLM_DTYPE_*).
type Dtype int32

const (
	Int32    Dtype = C.OLM_DTYPE_INT32
	Int64    Dtype = C.OLM_DTYPE_INT64
	Float32  Dtype = C.OLM_DTYPE_FLOAT32
	BFloat16 Dtype = C.OLM_DTYPE_BFLOAT16
	Float16  Dtype = C.OLM_DTYPE_FLOAT16
)

// Tensor is a dense tensor owned by libolm (on the host or a device).
type Tensor struct {
	c *C.olm_tensor
}

func newTensor(c *C.olm_tensor) *Tensor {
	if c == nil {
		return nil
	}
	t := &Tensor{c: c}
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t
}

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

// NewTensorInt64 copies data into a new int64 tensor of the given shape.
func NewTensorInt64(data []int64, shape ...int64) (*Tensor, error) {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	t, err := newTensorFrom(Int64, p, len(data)*8, shape)
	runtime.KeepAlive(data)
	return t, err
}

// NewTensorInt32 copies data into a new int32 tensor of the given shape.
func NewTensorInt32(data []int32, shape ...int64) (*Tensor, error) {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	t, err := newTensorFrom(Int32, p, len(data)*4, shape)
	runtime.KeepAlive(data)
	return t, err
}

// NewTensorFloat32 copies data into a new float32 tensor of the given shape.
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
	err := takeError(C.olm_tensor_dtype(t.c, &d))
	runtime.KeepAlive(t)
	return Dtype(d), err
}

// Shape is the tensor's dimensions.
func (t *Tensor) Shape() ([]int64, error) {
	var n C.size_t
	if err := takeError(C.olm_tensor_ndim(t.c, &n)); err != nil {
		return nil, err
	}
	shape := make([]int64, int(n)+1)
	err := takeError(C.olm_tensor_shape(t.c, (*C.int64_t)(unsafe.Pointer(&shape[0])), n))
	runtime.KeepAlive(t)
	return shape[:n], err
}

func (t *Tensor) copyOut(want Dtype, elemSize int, dst func(n int) unsafe.Pointer) error {
	d, err := t.Dtype()
	if err != nil {
		return err
	}
	if d != want {
		return &Error{Code: ErrInvalidArgument, Message: fmt.Sprintf("tensor: dtype %d, not %d", d, want)}
	}
	var nbytes C.size_t
	if err := takeError(C.olm_tensor_nbytes(t.c, &nbytes)); err != nil {
		return err
	}
	n := int(nbytes) / elemSize
	if n == 0 {
		return nil
	}
	err = takeError(C.olm_tensor_copy_to_host(t.c, dst(n), nbytes))
	runtime.KeepAlive(t)
	return err
}

// Float32s copies a float32 tensor's elements out, row-major.
func (t *Tensor) Float32s() ([]float32, error) {
	var out []float32
	err := t.copyOut(Float32, 4, func(n int) unsafe.Pointer { out = make([]float32, n); return unsafe.Pointer(&out[0]) })
	return out, err
}

// Int64s copies an int64 tensor's elements out, row-major.
func (t *Tensor) Int64s() ([]int64, error) {
	var out []int64
	err := t.copyOut(Int64, 8, func(n int) unsafe.Pointer { out = make([]int64, n); return unsafe.Pointer(&out[0]) })
	return out, err
}

// Int32s copies an int32 tensor's elements out, row-major.
func (t *Tensor) Int32s() ([]int32, error) {
	var out []int32
	err := t.copyOut(Int32, 4, func(n int) unsafe.Pointer { out = make([]int32, n); return unsafe.Pointer(&out[0]) })
	return out, err
}

// Close releases the tensor. It is safe to call more than once and on nil.
func (t *Tensor) Close() {
	if t != nil && t.c != nil {
		C.olm_tensor_free(t.c)
		t.c = nil
		runtime.SetFinalizer(t, nil)
	}
}
