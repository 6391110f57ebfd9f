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

// Config is a validated model configuration (schema/olm.fbs TransformerConfig).
type Config struct {
	c *C.olm_config
}

func newConfig(c *C.olm_config) *Config {
	cfg := &Config{c: c}
	runtime.SetFinalizer(cfg, (*Config).Close)
	return cfg
}

// ConfigFromPreset builds one of OLMo-core's presets ("olmo2_30M", "llama3_8B", ...).
func ConfigFromPreset(name string, vocabSize int64) (*Config, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var out *C.olm_config
	if err := takeError(C.olm_config_from_preset(cname, C.int64_t(vocabSize), &out)); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// ConfigFromJSON parses and validates a JSON configuration.
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
func ConfigFromFlatBuffer(data []byte) (*Config, error) {
	var out *C.olm_config
	buf := data
	if len(buf) == 0 {
		buf = []byte{0} // a valid pointer for an empty buffer; the length says 0
	}
	if err := takeError(C.olm_config_from_flatbuffer(unsafe.Pointer(&buf[0]), C.size_t(len(data)), &out)); err != nil {
		return nil, err
	}
	return newConfig(out), nil
}

// takeBuffer copies and releases a library buffer.
func takeBuffer(b *C.olm_buffer) []byte {
	defer C.olm_buffer_free(b)
	return C.GoBytes(unsafe.Pointer(C.olm_buffer_data(b)), C.int(C.olm_buffer_size(b)))
}

// JSON serializes the configuration.
func (c *Config) JSON() (string, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_config_to_json(c.c, &buf))
	runtime.KeepAlive(c)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(buf)), nil
}

// FlatBuffer serializes the configuration as a binary FlatBuffer.
func (c *Config) FlatBuffer() ([]byte, error) {
	var buf *C.olm_buffer
	err := takeError(C.olm_config_to_flatbuffer(c.c, &buf))
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	return takeBuffer(buf), nil
}

// NumParams counts parameters as OLMo-core does (total and without the embeddings).
func (c *Config) NumParams() (total, nonEmbedding int64, err error) {
	var t, n C.int64_t
	err = takeError(C.olm_config_num_params(c.c, &t, &n))
	runtime.KeepAlive(c)
	return int64(t), int64(n), err
}

// NumFlopsPerToken is OLMo-core's idealized training FLOPs per token at a sequence length.
func (c *Config) NumFlopsPerToken(seqLen int64) (int64, error) {
	var f C.int64_t
	err := takeError(C.olm_config_num_flops_per_token(c.c, C.int64_t(seqLen), &f))
	runtime.KeepAlive(c)
	return int64(f), err
}

// Close releases the configuration. It is safe to call more than once.
func (c *Config) Close() {
	if c != nil && c.c != nil {
		C.olm_config_free(c.c)
		c.c = nil
		runtime.SetFinalizer(c, nil)
	}
}
