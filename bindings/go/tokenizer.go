package olm

/*
#include <stdlib.h>
#include <string.h>
#include <olm.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Tokenizer turns text into token ids and back, natively: Hugging Face tokenizer.json files
// and SentencePiece models. It is immutable, so its methods may be called from many goroutines
// at once (but not concurrently with Close). Close releases it at once; a finalizer is only a
// backstop.
type Tokenizer struct {
	c *C.olm_tokenizer
}

// SpecialIDs are the ids of a tokenizer's special roles; -1 where it has none.
type SpecialIDs struct {
	BOS, EOS, PAD, UNK int32
}

// LoadTokenizer loads a tokenizer.json, a SentencePiece .model or a Hugging Face model
// directory (recognised by content; a tokenizer_config.json beside it assigns the special
// roles).
func LoadTokenizer(path string) (*Tokenizer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var out *C.olm_tokenizer
	if err := takeError(C.olm_tokenizer_load(cpath, &out)); err != nil {
		return nil, err
	}
	t := &Tokenizer{c: out}
	runtime.SetFinalizer(t, (*Tokenizer).Close)
	return t, nil
}

// ptr is the C handle; NULL for a nil or closed tokenizer (the library then reports
// ErrInvalidArgument).
func (t *Tokenizer) ptr() *C.olm_tokenizer {
	if t == nil {
		return nil
	}
	return t.c
}

// textPtr points at a copy of s's bytes in Go memory (cgo may read it during the call); the
// copy is never empty, so the pointer is never NULL.
func textPtr(s string) (*C.char, []byte) {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return (*C.char)(unsafe.Pointer(&b[0])), b
}

func cBool(v bool) C.int32_t {
	if v {
		return 1
	}
	return 0
}

// Encode returns the token ids of text; addSpecialTokens adds the tokenizer's template (a
// SentencePiece model's BOS, a tokenizer.json post-processor's).
func (t *Tokenizer) Encode(text string, addSpecialTokens bool) ([]int32, error) {
	p, keep := textPtr(text)
	var out *C.olm_tensor
	err := takeError(C.olm_tokenizer_encode(t.ptr(), p, C.size_t(len(text)), cBool(addSpecialTokens), &out))
	runtime.KeepAlive(t)
	runtime.KeepAlive(keep)
	if err != nil {
		return nil, err
	}
	ids := newTensor(out)
	defer ids.Close()
	return ids.Int32s()
}

// EncodeInto writes text's ids into ids and returns how many it wrote. When ids is too small
// the error gives the number needed and ids is left as it was.
func (t *Tokenizer) EncodeInto(text string, addSpecialTokens bool, ids []int32) (int, error) {
	p, keep := textPtr(text)
	var dst *C.int32_t
	if len(ids) > 0 {
		dst = (*C.int32_t)(unsafe.Pointer(&ids[0]))
	}
	var count C.size_t
	err := takeError(C.olm_tokenizer_encode_into(t.ptr(), p, C.size_t(len(text)), cBool(addSpecialTokens), dst,
		C.size_t(len(ids)), &count))
	runtime.KeepAlive(t)
	runtime.KeepAlive(keep)
	runtime.KeepAlive(ids)
	if err != nil {
		return 0, err
	}
	return int(count), nil
}

// EncodeBatch encodes many texts at once, in parallel on the library's threads
// (SetNumThreads); the result holds one id slice per text, in order.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecialTokens bool) ([][]int32, error) {
	// cgo forbids Go pointers inside memory passed to C, so the texts and the pointer array
	// live in C memory for the call.
	total := 0
	for _, s := range texts {
		total += len(s)
	}
	n := len(texts)
	arena := C.malloc(C.size_t(total + 1))
	defer C.free(arena)
	ptrs := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof(uintptr(0))))
	defer C.free(ptrs)
	lens := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof(C.size_t(0))))
	defer C.free(lens)
	ptrSlots := unsafe.Slice((**C.char)(ptrs), n+1)
	lenSlots := unsafe.Slice((*C.size_t)(lens), n+1)
	bytes := unsafe.Slice((*byte)(arena), total+1)
	offset := 0
	for i, s := range texts {
		copy(bytes[offset:], s)
		ptrSlots[i] = (*C.char)(unsafe.Pointer(&bytes[offset]))
		lenSlots[i] = C.size_t(len(s))
		offset += len(s)
	}
	var ids, offsets *C.olm_tensor
	err := takeError(C.olm_tokenizer_encode_batch(t.ptr(), (**C.char)(ptrs), (*C.size_t)(lens), C.size_t(n),
		cBool(addSpecialTokens), &ids, &offsets))
	runtime.KeepAlive(t)
	if err != nil {
		return nil, err
	}
	idsT, offsetsT := newTensor(ids), newTensor(offsets)
	defer idsT.Close()
	defer offsetsT.Close()
	all, err := idsT.Int32s()
	if err != nil {
		return nil, err
	}
	offs, err := offsetsT.Int64s()
	if err != nil {
		return nil, err
	}
	out := make([][]int32, n)
	for i := range out {
		out[i] = all[offs[i]:offs[i+1]:offs[i+1]]
	}
	return out, nil
}

// Decode returns the text of ids. With skipSpecialTokens, special tokens (<s>, </s>) give no
// text; bytes that do not form UTF-8 become U+FFFD.
func (t *Tokenizer) Decode(ids []int32, skipSpecialTokens bool) (string, error) {
	buf := ids
	if len(buf) == 0 {
		buf = []int32{0}
	}
	var out *C.olm_buffer
	err := takeError(C.olm_tokenizer_decode(t.ptr(), (*C.int32_t)(unsafe.Pointer(&buf[0])), C.size_t(len(ids)),
		cBool(skipSpecialTokens), &out))
	runtime.KeepAlive(t)
	runtime.KeepAlive(buf)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(out)), nil
}

// TokenToID returns the id of a vocabulary entry (as the tokenizer's files write it, e.g.
// "▁the"); ok is false when the vocabulary has no such token.
func (t *Tokenizer) TokenToID(token string) (id int32, ok bool, err error) {
	p, keep := textPtr(token)
	var out C.int32_t
	err = takeError(C.olm_tokenizer_token_to_id(t.ptr(), p, C.size_t(len(token)), &out))
	runtime.KeepAlive(t)
	runtime.KeepAlive(keep)
	if err != nil {
		return 0, false, err
	}
	return int32(out), out >= 0, nil
}

// IDToToken returns the vocabulary entry of id; an error for an id outside the vocabulary.
func (t *Tokenizer) IDToToken(id int32) (string, error) {
	var out *C.olm_buffer
	err := takeError(C.olm_tokenizer_id_to_token(t.ptr(), C.int32_t(id), &out))
	runtime.KeepAlive(t)
	if err != nil {
		return "", err
	}
	return string(takeBuffer(out)), nil
}

// VocabSize is one past the largest id, added tokens included.
func (t *Tokenizer) VocabSize() (int64, error) {
	var out C.int64_t
	err := takeError(C.olm_tokenizer_vocab_size(t.ptr(), &out))
	runtime.KeepAlive(t)
	return int64(out), err
}

// SpecialIDs returns the ids of the special roles (BOS, EOS, padding, unknown).
func (t *Tokenizer) SpecialIDs() (SpecialIDs, error) {
	var s C.olm_special_ids
	s.struct_size = C.size_t(unsafe.Sizeof(s))
	err := takeError(C.olm_tokenizer_special_ids(t.ptr(), &s))
	runtime.KeepAlive(t)
	if err != nil {
		return SpecialIDs{}, err
	}
	return SpecialIDs{BOS: int32(s.bos_id), EOS: int32(s.eos_id), PAD: int32(s.pad_id), UNK: int32(s.unk_id)}, nil
}

// Close releases the tokenizer. Safe to call twice and on nil; it always returns nil (the C
// release functions cannot fail): every handle is an io.Closer.
func (t *Tokenizer) Close() error {
	if t != nil && t.c != nil {
		C.olm_tokenizer_free(t.c)
		t.c = nil
		runtime.SetFinalizer(t, nil)
	}
	return nil
}
