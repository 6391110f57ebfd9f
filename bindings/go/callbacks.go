package olm

/*
#include <olm.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// callbackState carries Go callbacks through C as a cgo.Handle. A panic inside a callback
// is caught (it must not unwind through C), generation or training is stopped, and the
// panic is re-raised in Go once the C call has returned.
type callbackState struct {
	onToken  func(int64) bool
	onStep   func(StepMetrics) bool
	onLog    func(string)
	panicked interface{}
}

func stateOf(userData unsafe.Pointer) *callbackState {
	return cgo.Handle(uintptr(userData)).Value().(*callbackState)
}

//export olmGoOnToken
func olmGoOnToken(token C.int64_t, userData unsafe.Pointer) (stop C.int32_t) {
	s := stateOf(userData)
	defer func() {
		if r := recover(); r != nil {
			s.panicked = r
			stop = 1
		}
	}()
	if s.onToken(int64(token)) {
		return 0
	}
	return 1
}

//export olmGoOnStep
func olmGoOnStep(m *C.olm_step_metrics, userData unsafe.Pointer) (stop C.int32_t) {
	s := stateOf(userData)
	if s.onStep == nil {
		return 0
	}
	defer func() {
		if r := recover(); r != nil {
			s.panicked = r
			stop = 1
		}
	}()
	if s.onStep(stepMetricsFromC(m)) {
		return 0
	}
	return 1
}

//export olmGoOnLog
func olmGoOnLog(message *C.char, userData unsafe.Pointer) {
	s := stateOf(userData)
	if s.onLog == nil || s.panicked != nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.panicked = r
		}
	}()
	s.onLog(C.GoString(message))
}
