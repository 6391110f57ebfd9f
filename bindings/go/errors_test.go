package olm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestVersionAndDevices(t *testing.T) {
	if Version() != "0.1.0" {
		t.Fatalf("version %q", Version())
	}
	if CudaDeviceCount() < 0 {
		t.Fatal("negative device count")
	}
}

func TestErrorValues(t *testing.T) {
	_, err := ConfigFromJSON("{")
	wrapped := fmt.Errorf("loading the config: %w", err)
	var e *Error
	if !errors.As(wrapped, &e) || e.Code != ErrParse {
		t.Fatalf("errors.As through a wrapper: %v", wrapped)
	}
	if !errors.Is(wrapped, &Error{Code: ErrParse}) || errors.Is(wrapped, &Error{Code: ErrIO}) {
		t.Fatal("errors.Is matches on the code")
	}
	if !strings.HasPrefix(err.Error(), "olm: parse error: ") || !strings.Contains(err.Error(), e.Message) {
		t.Fatalf("Error() = %q", err.Error())
	}
	codes := map[Code]string{ErrInvalidArgument: "invalid argument", ErrInvalidConfig: "invalid config",
		ErrParse: "parse error", ErrIO: "I/O error", ErrOutOfMemory: "out of memory",
		ErrDeviceUnavailable: "device unavailable", ErrMismatch: "mismatch", ErrInternal: "internal error",
		Code(99): "code 99"}
	for c, s := range codes {
		if c.String() != s {
			t.Fatalf("%d: %q", int32(c), c.String())
		}
	}
	// The values are the header's, fixed forever.
	if ErrInvalidArgument != 1 || ErrInvalidConfig != 2 || ErrParse != 3 || ErrIO != 4 ||
		ErrOutOfMemory != 5 || ErrDeviceUnavailable != 6 || ErrMismatch != 7 || ErrInternal != 8 {
		t.Fatal("error codes differ from OLM_ERR_*")
	}
}
