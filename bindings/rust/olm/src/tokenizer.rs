//! Text <-> token ids natively: Hugging Face tokenizer.json files and SentencePiece models.

use std::fmt;
use std::os::raw::c_char;
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::{check, invalid, nonnull_empty, path_cstring, take_buffer, Result, Tensor};
use olm_sys as sys;

handle!(
    /// A tokenizer loaded by libolm (`olm_tokenizer`): immutable, so it is `Sync` and one
    /// tokenizer may encode on many threads at once.
    Tokenizer,
    sys::olm_tokenizer,
    sys::olm_tokenizer_free
);
opaque_debug!(Tokenizer);

// SAFETY: olm.h: a tokenizer is immutable once loaded and "may be used from many threads at
// once"; every function on it takes it as const.
unsafe impl Sync for Tokenizer {}

/// The ids a tokenizer gives its special roles; `None` where it has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpecialIds {
    /// Beginning of sequence (`<s>`).
    pub bos: Option<i32>,
    /// End of sequence (`</s>`, `<|endoftext|>`).
    pub eos: Option<i32>,
    /// Padding.
    pub pad: Option<i32>,
    /// Unknown token.
    pub unk: Option<i32>,
}

fn role(id: i32) -> Option<i32> {
    if id >= 0 {
        Some(id)
    } else {
        None
    }
}

impl Tokenizer {
    /// Loads a tokenizer.json, a SentencePiece `.model` or a Hugging Face model directory
    /// (recognised by content; a `tokenizer_config.json` beside it assigns the special roles).
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path_cstring(path.as_ref())?;
        let mut out = ptr::null_mut();
        // SAFETY: path is NUL-terminated; out is a valid out pointer.
        check(unsafe { sys::olm_tokenizer_load(path.as_ptr(), &mut out) })?;
        Ok(Tokenizer::from_raw(out))
    }

    /// The token ids of `text`; `add_special_tokens` adds the tokenizer's template (a
    /// SentencePiece model's BOS, a tokenizer.json post-processor's).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i32>> {
        let mut out = ptr::null_mut();
        // SAFETY: the tokenizer is live; text's pointer covers text.len() bytes (a dangling but
        // non-NULL pointer when empty, which is never read); out is a valid out pointer.
        check(unsafe {
            sys::olm_tokenizer_encode(
                self.ptr.as_ptr(),
                nonnull_empty(text.as_bytes()) as *const c_char,
                text.len(),
                add_special_tokens as i32,
                &mut out,
            )
        })?;
        Tensor::from_raw(out).to_vec_i32()
    }

    /// Encodes `text` into `ids` without allocating; returns how many ids were written. When
    /// `ids` is too small the error gives the number needed and `ids` is left as it was.
    pub fn encode_into(&self, text: &str, add_special_tokens: bool, ids: &mut [i32]) -> Result<usize> {
        let mut count = 0usize;
        // SAFETY: as encode; ids covers ids.len() writable int32 values (a dangling non-NULL
        // pointer with capacity 0 is never written).
        check(unsafe {
            sys::olm_tokenizer_encode_into(
                self.ptr.as_ptr(),
                nonnull_empty(text.as_bytes()) as *const c_char,
                text.len(),
                add_special_tokens as i32,
                nonnull_empty(ids) as *mut i32,
                ids.len(),
                &mut count,
            )
        })?;
        Ok(count)
    }

    /// Encodes many texts at once, in parallel on the library's threads
    /// ([`crate::set_num_threads`]); the result has one id vector per text, in order.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S], add_special_tokens: bool) -> Result<Vec<Vec<i32>>> {
        let ptrs: Vec<*const c_char> =
            texts.iter().map(|t| nonnull_empty(t.as_ref().as_bytes()) as *const c_char).collect();
        let lens: Vec<usize> = texts.iter().map(|t| t.as_ref().len()).collect();
        let mut ids = ptr::null_mut();
        let mut offsets = ptr::null_mut();
        // SAFETY: ptrs[i] covers lens[i] bytes of texts[i], which outlive the call; the arrays
        // hold texts.len() entries (dangling non-NULL pointers when empty, never read); the out
        // pointers are valid.
        check(unsafe {
            sys::olm_tokenizer_encode_batch(
                self.ptr.as_ptr(),
                nonnull_empty(&ptrs),
                nonnull_empty(&lens),
                texts.len(),
                add_special_tokens as i32,
                &mut ids,
                &mut offsets,
            )
        })?;
        let ids = Tensor::from_raw(ids).to_vec_i32()?;
        let offsets = Tensor::from_raw(offsets).to_vec_i64()?;
        Ok(offsets.windows(2).map(|w| ids[w[0] as usize..w[1] as usize].to_vec()).collect())
    }

    /// The text of `ids`. With `skip_special_tokens`, special tokens (`<s>`, `</s>`) give no
    /// text; bytes that do not form UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[i32], skip_special_tokens: bool) -> Result<String> {
        let mut buf = ptr::null_mut();
        // SAFETY: the tokenizer is live; ids covers ids.len() values; buf is a valid out pointer.
        check(unsafe {
            sys::olm_tokenizer_decode(
                self.ptr.as_ptr(),
                nonnull_empty(ids),
                ids.len(),
                skip_special_tokens as i32,
                &mut buf,
            )
        })?;
        String::from_utf8(take_buffer(buf)).map_err(|_| invalid("decode: the library returned text that is not UTF-8"))
    }

    /// The id of a vocabulary entry (as the tokenizer's files write it, e.g. `"▁the"`), or
    /// `None` when the vocabulary has no such token.
    pub fn token_to_id(&self, token: &str) -> Result<Option<i32>> {
        let mut id = -1i32;
        // SAFETY: token's pointer covers token.len() bytes; id is a valid out pointer.
        check(unsafe {
            sys::olm_tokenizer_token_to_id(
                self.ptr.as_ptr(),
                nonnull_empty(token.as_bytes()) as *const c_char,
                token.len(),
                &mut id,
            )
        })?;
        Ok(role(id))
    }

    /// The vocabulary entry of `id`; an error for an id outside the vocabulary.
    pub fn id_to_token(&self, id: i32) -> Result<String> {
        let mut buf = ptr::null_mut();
        // SAFETY: the tokenizer is live; buf is a valid out pointer.
        check(unsafe { sys::olm_tokenizer_id_to_token(self.ptr.as_ptr(), id, &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    /// One past the largest id, added tokens included.
    pub fn vocab_size(&self) -> Result<i64> {
        let mut size = 0i64;
        // SAFETY: the tokenizer is live; size is a valid out pointer.
        check(unsafe { sys::olm_tokenizer_vocab_size(self.ptr.as_ptr(), &mut size) })?;
        Ok(size)
    }

    /// The ids of the special roles (BOS, EOS, padding, unknown).
    pub fn special_ids(&self) -> Result<SpecialIds> {
        let mut raw = sys::olm_special_ids {
            struct_size: std::mem::size_of::<sys::olm_special_ids>(),
            bos_id: -1,
            eos_id: -1,
            pad_id: -1,
            unk_id: -1,
        };
        // SAFETY: raw is a result struct whose struct_size covers it; the library writes only
        // within it.
        check(unsafe { sys::olm_tokenizer_special_ids(self.ptr.as_ptr(), &mut raw) })?;
        Ok(SpecialIds { bos: role(raw.bos_id), eos: role(raw.eos_id), pad: role(raw.pad_id), unk: role(raw.unk_id) })
    }
}
