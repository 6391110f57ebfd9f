package olm

import (
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// tinyJSON is a two-layer OLMo-2 model with a 64-token vocabulary.
const tinyJSON = `{"d_model": 32, "vocab_size": 64, "n_layers": 2,
 "block": {"name": "reordered_norm",
   "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 96, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}}`

// must unwraps a (value, error) pair; an error fails the test through a panic, which the
// testing package reports with the failing line.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// wantCode asserts that err is an *olm.Error with a code and a message containing substr.
func wantCode(t *testing.T, err error, code Code, substr string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *olm.Error with code %v, got %v", code, err)
	}
	if e.Code != code || !strings.Contains(e.Message, substr) {
		t.Fatalf("want code %v containing %q, got %v: %q", code, substr, e.Code, e.Message)
	}
	if e.Message == "" {
		t.Fatal("an error needs a message")
	}
}

// ids are n deterministic token ids below modulo.
func ids(n, modulo int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = (int64(i)*7 + 3) % modulo
	}
	return out
}

func allFinite(t *testing.T, values []float32) {
	t.Helper()
	for i, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("value %d is %v", i, v)
		}
	}
}

func sameShape(t *testing.T, tensor *Tensor, want ...int64) {
	t.Helper()
	got := must(tensor.Shape())
	if len(got) != len(want) {
		t.Fatalf("shape %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("shape %v, want %v", got, want)
		}
	}
}

// residentBytes is the process's resident set size from /proc/self/statm.
func residentBytes(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	fields := strings.Fields(string(data))
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}
