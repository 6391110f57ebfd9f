package olm

/*
#cgo pkg-config: olm
#include <olm.h>
*/
import "C"

import "fmt"

// Code classifies an Error; the values are libolm's OLM_ERR_* codes.
type Code int32

const (
	ErrInvalidArgument   Code = C.OLM_ERR_INVALID_ARGUMENT
	ErrInvalidConfig     Code = C.OLM_ERR_INVALID_CONFIG
	ErrParse             Code = C.OLM_ERR_PARSE
	ErrIO                Code = C.OLM_ERR_IO
	ErrOutOfMemory       Code = C.OLM_ERR_OUT_OF_MEMORY
	ErrDeviceUnavailable Code = C.OLM_ERR_DEVICE_UNAVAILABLE
	ErrMismatch          Code = C.OLM_ERR_MISMATCH
	ErrInternal          Code = C.OLM_ERR_INTERNAL
	ErrDistributed       Code = C.OLM_ERR_DISTRIBUTED
)

func (c Code) String() string {
	switch c {
	case ErrInvalidArgument:
		return "invalid argument"
	case ErrInvalidConfig:
		return "invalid config"
	case ErrParse:
		return "parse error"
	case ErrIO:
		return "I/O error"
	case ErrOutOfMemory:
		return "out of memory"
	case ErrDeviceUnavailable:
		return "device unavailable"
	case ErrMismatch:
		return "mismatch"
	case ErrInternal:
		return "internal error"
	case ErrDistributed:
		return "distributed error"
	}
	return fmt.Sprintf("code %d", int32(c))
}

// Error is an error reported by libolm (or by this package for a misuse it can see before
// calling C, such as a dtype mismatch on copy-out). Use errors.As to inspect the code:
//
//	var e *olm.Error
//	if errors.As(err, &e) && e.Code == olm.ErrParse { ... }
//
// errors.Is(err, &olm.Error{Code: olm.ErrIO}) also matches on the code alone.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return "olm: " + e.Code.String() + ": " + e.Message }

// Is reports whether target is an *Error with the same code and either an empty or the same
// message, so that errors.Is(err, &olm.Error{Code: olm.ErrParse}) matches any parse error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// takeError converts and releases a C error; nil for success.
func takeError(err *C.olm_error) error {
	if err == nil {
		return nil
	}
	e := &Error{Code: Code(C.olm_error_code(err)), Message: C.GoString(C.olm_error_message(err))}
	C.olm_error_free(err)
	return e
}

// Version is the library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.olm_version()) }

// CudaDeviceCount is the number of CUDA devices this process can use (0 without a GPU).
func CudaDeviceCount() int { return int(C.olm_cuda_device_count()) }
