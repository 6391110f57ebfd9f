package olm

/*
#include <stdlib.h>
#include <olm.h>

// The DLPack C ABI's DLManagedTensor (dlpack.h), as far as this package reads it: enough to
// find the data pointer and call the deleter. olm.h passes it as void*.
typedef struct {
	void* data;
	int32_t device_type;
	int32_t device_id;
	int32_t ndim;
	uint8_t code;
	uint8_t bits;
	uint16_t lanes;
	int64_t* shape;
	int64_t* strides;
	uint64_t byte_offset;
	void* manager_ctx;
	void (*deleter)(void* self);
} olm_go_dl_managed_tensor;

static void olm_go_dlpack_delete(void* p) {
	olm_go_dl_managed_tensor* m = (olm_go_dl_managed_tensor*)p;
	if (m->deleter) m->deleter(m);
}

static void* olm_go_dlpack_data(void* p) { return ((olm_go_dl_managed_tensor*)p)->data; }
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Parameter copies the model's parameter called name (an OLMo-core state-dict name such as
// "blocks.0.attention.w_q.weight"; Parameters lists them) into a new tensor with its dtype and
// shape, on the model's device. ErrInvalidArgument for an unknown name (the message names the
// nearest) or while an FSDP trainer shards the model.
func (m *Model) Parameter(name string) (*Tensor, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var out *C.olm_tensor
	err := takeError(C.olm_model_get_parameter(m.ptr(), cname, &out))
	runtime.KeepAlive(m)
	if err != nil {
		return nil, err
	}
	return newTensor(out), nil
}

// SetParameter overwrites the parameter called name with value's elements, in place: the
// parameter's shape, and its dtype or Float32 (rounded to the parameter's dtype). Trainers of
// the model keep their optimizer state for it. The model is unchanged on error.
func (m *Model) SetParameter(name string, value *Tensor) error {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	err := takeError(C.olm_model_set_parameter(m.ptr(), cname, value.ptr()))
	runtime.KeepAlive(m)
	runtime.KeepAlive(value)
	return err
}

// DLPack is a DLPack DLManagedTensor (dlpack.h) sharing a tensor's memory without a copy.
// Hand Ptr to a consumer that takes ownership (and then forget it), or Close it, which calls its
// deleter; a finalizer only backs Close up.
type DLPack struct {
	p unsafe.Pointer
}

func newDLPack(p unsafe.Pointer) *DLPack {
	d := &DLPack{p: p}
	runtime.SetFinalizer(d, (*DLPack).Close)
	return d
}

// DLPackFromPtr wraps a DLManagedTensor* another framework produced, taking ownership of it.
func DLPackFromPtr(p unsafe.Pointer) *DLPack {
	if p == nil {
		return nil
	}
	return newDLPack(p)
}

// Ptr is the DLManagedTensor*; nil after Close or Release.
func (d *DLPack) Ptr() unsafe.Pointer {
	if d == nil {
		return nil
	}
	return d.p
}

// Data is the DLTensor's data pointer (host or device memory); nil after Close or Release.
func (d *DLPack) Data() unsafe.Pointer {
	if d == nil || d.p == nil {
		return nil
	}
	return C.olm_go_dlpack_data(d.p)
}

// Release gives up ownership and returns the DLManagedTensor* for a consumer that calls its
// deleter itself (a framework's from_dlpack).
func (d *DLPack) Release() unsafe.Pointer {
	if d == nil {
		return nil
	}
	p := d.p
	d.p = nil
	runtime.SetFinalizer(d, nil)
	return p
}

// Close calls the deleter. It is safe to call more than once and on nil.
func (d *DLPack) Close() {
	if d == nil || d.p == nil {
		return
	}
	C.olm_go_dlpack_delete(d.p)
	d.p = nil
	runtime.SetFinalizer(d, nil)
}

// ToDLPack exports the tensor through DLPack without copying: the result shares its memory
// (writes through either show in both) and keeps it alive after the tensor is closed.
func (t *Tensor) ToDLPack() (*DLPack, error) {
	var out unsafe.Pointer
	err := takeError(C.olm_tensor_to_dlpack(t.ptr(), &out))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	return newDLPack(out), nil
}

// TensorFromDLPack imports a DLPack tensor without copying (int32, int64, float32, float16 or
// bfloat16 on the CPU or a CUDA device). On success the tensor owns d's DLManagedTensor (d is
// emptied; the library calls the deleter once the tensor is closed); on error d still owns it.
func TensorFromDLPack(d *DLPack) (*Tensor, error) {
	var out *C.olm_tensor
	err := takeError(C.olm_tensor_from_dlpack(d.Ptr(), &out))
	runtime.KeepAlive(d)
	if err != nil {
		return nil, err
	}
	d.Release()
	return newTensor(out), nil
}

// SetNumThreads sets the number of CPU threads the library's operations use, 1 to 1024, for
// the whole process (every goroutine, whichever thread it runs on).
func SetNumThreads(n int) error {
	if int64(n) != int64(int32(n)) {
		return &Error{Code: ErrInvalidArgument, Message: fmt.Sprintf("num_threads: %d is outside [1, 1024]", n)}
	}
	return takeError(C.olm_set_num_threads(C.int32_t(n)))
}

// NumThreads is the number of CPU threads the library's operations use.
func NumThreads() int {
	return int(C.olm_get_num_threads())
}
