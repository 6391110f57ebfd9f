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

// Config is a validated, immutable model configuration (schema/olm.fbs TransformerConfig).
// Models built from it keep their own copy, so it may be closed right after NewModel.
type Config struct {
	c *C.olm_config
}

func newConfig(c *C.olm_config) *Config {
	cfg := &Config{c: c}
	runtime.SetFinalizer(cfg, (*Config).Close)
	return cfg
}

// ptr is the C handle; NULL for a nil or closed config (the library then reports
// ErrInvalidArgument).
func (c *Config) ptr() *C.olm_config {
	if c == nil {
		return nil
	}
	return c.c
}

// ConfigFromPreset builds one of OLMo-core's presets ("olmo2_30M", "llama3_8B", ...) with a
// vocabulary size.
func ConfigFromPreset(name string, vocabSize int64) (*Config, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var out *C.olm_config
	if err := takeError(C.olm_config_from_preset(cname, C.int64_t(vocabSize), &out)); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// ConfigFromJSON parses and validates a JSON configuration (the JSON form of
// schema/olm.fbs). Malformed JSON, unknown fields and wrong types give ErrParse; impossible
// values give ErrInvalidConfig naming the field.
func ConfigFromJSON(text string) (*Config, error) {
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	var out *C.olm_config
	if err := takeError(C.olm_config_from_json(ctext, C.size_t(len(text)), &out)); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// ConfigFromFlatBuffer verifies and validates a binary configuration (identifier "OLMC").
// The library copies the bytes; data is only read during the call.
func ConfigFromFlatBuffer(data []byte) (*Config, error) {
	var out *C.olm_config
	err := takeError(C.olm_config_from_flatbuffer(bytesPtr(data), C.size_t(len(data)), &out))
	runtime.KeepAlive(data)
	if err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

var emptyByte [1]byte

// bytesPtr points at the first byte of data, or at a static byte for an empty slice, so
// that an empty input reaches the library as a zero-length buffer (which fails
// verification with ErrParse) rather than as a NULL pointer.
func bytesPtr(data []byte) unsafe.Pointer {
	if len(data) == 0 {
		return unsafe.Pointer(&emptyByte[0])
	}
	return unsafe.Pointer(&data[0])
}

// takeBuffer copies and releases a library buffer.
func takeBuffer(b *C.olm_buffer) []byte {
	defer C.olm_buffer_free(b)
	n := C.olm_buffer_size(b)
	if n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(C.olm_buffer_data(b)), C.int(n))
}

// JSON serializes the configuration as JSON text.
func (c *Config) JSON() (string, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_config_to_json(c.ptr(), &buf))
	runtime.KeepAlive(c)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(buf)), nil
}

// FlatBuffer serializes the configuration as a binary FlatBuffer (identifier "OLMC").
func (c *Config) FlatBuffer() ([]byte, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_config_to_flatbuffer(c.ptr(), &buf))
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	return takeBuffer(buf), nil
}

// NumParams counts parameters as OLMo-core's TransformerConfig does: the total and the
// count without the embedding table.
func (c *Config) NumParams() (total, nonEmbedding int64, err error) {
	var t, n C.int64_t
	err = takeError(C.olm_config_num_params(c.ptr(), &t, &n))
	runtime.KeepAlive(c)
	if err != nil {
		return 0, 0, err
	}
	return int64(t), int64(n), nil
}

// NumActiveParams counts the parameters one token uses, as OLMo-core's num_active_params
// does: an MoE block counts top_k of its experts. Equal to NumParams for dense models.
func (c *Config) NumActiveParams() (active, activeNonEmbedding int64, err error) {
	var a, n C.int64_t
	err = takeError(C.olm_config_num_active_params(c.ptr(), &a, &n))
	runtime.KeepAlive(c)
	if err != nil {
		return 0, 0, err
	}
	return int64(a), int64(n), nil
}

// NumFlopsPerToken is OLMo-core's idealized training FLOPs per token at a sequence length
// (6 per non-embedding parameter plus 12 * layers * d_model * seqLen for attention).
func (c *Config) NumFlopsPerToken(seqLen int64) (int64, error) {
	var f C.int64_t
	err := takeError(C.olm_config_num_flops_per_token(c.ptr(), C.int64_t(seqLen), &f))
	runtime.KeepAlive(c)
	if err != nil {
		return 0, err
	}
	return int64(f), nil
}

// Close releases the configuration. It is safe to call more than once and on nil, and
// always returns nil (the C release functions cannot fail): every handle is an io.Closer.
func (c *Config) Close() error {
	if c != nil && c.c != nil {
		C.olm_config_free(c.c)
		c.c = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}
