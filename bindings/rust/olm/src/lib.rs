//! Safe Rust API for libolm: build OLMo-2 and Llama transformer language models, run forward
//! and loss, train, checkpoint and sample from them, through libolm's C ABI.
//!
//! Every handle ([`Config`], [`Model`], [`Tensor`], [`TrainConfig`], [`Trainer`], [`Dataset`],
//! [`Dist`], [`Tokenizer`]) owns its C object and frees it on `Drop`. Every fallible call returns
//! `Result<T, olm::Error>`.
//!
//! ```no_run
//! use olm::{Config, Device, Model, ModelOptions, Tensor};
//!
//! let config = Config::from_preset("olmo2_1M", 256)?;
//! let model = Model::new(&config, Device::Cpu, &ModelOptions::default())?;
//! let ids = Tensor::from_i64(&[1, 2, 3, 4], &[1, 4])?;
//! let logits = model.forward(&ids)?; // every position; see Model::forward_with for options
//! println!("{:?}", logits.shape()?);
//! # Ok::<(), olm::Error>(())
//! ```
//!
//! # Threads
//!
//! `olm.h` allows a handle to be used from any thread, but by one thread at a time, and
//! different handles concurrently. This crate enforces that at compile time:
//!
//! - Handles are `Send` (they may move to another thread) and, except [`Dataset`] and
//!   [`Tokenizer`], not `Sync`, so a `&Model` or `&Tensor` never reaches a second thread. A
//!   [`Dataset`] and a [`Tokenizer`] are immutable and documented thread-safe by `olm.h`, so
//!   they are also `Sync`.
//! - A [`Trainer`] and its model are one object for threading: [`Trainer::new`] borrows the
//!   model mutably for the trainer's whole life (reach it through [`Trainer::model`] and
//!   [`Trainer::model_mut`]), and a process group given to [`Trainer::set_dist`] is borrowed
//!   the same way, because the trainer issues collectives on it.
//! - [`Model::generate`] takes `&mut self`, so its token callback cannot call back into the
//!   same model, which `olm.h` forbids.
//!
//! Panics inside callbacks never unwind through C: they stop the C call, which returns, and
//! are resumed on the caller's side.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

use std::any::Any;
use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::str::FromStr;

use olm_sys as sys;

mod params;
pub use params::{num_threads, set_num_threads, DlPack};
mod step_metrics;
pub use step_metrics::StepMetrics;

// ------------------------------------------------------------------------------------------
// Errors

/// What kind of failure an [`Error`] is (libolm's `OLM_ERR_*` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An argument is NULL, out of range, or of the wrong dtype or shape (`OLM_ERR_INVALID_ARGUMENT`).
    InvalidArgument,
    /// A configuration is well-formed but impossible; the message names the field.
    InvalidConfig,
    /// JSON, FlatBuffers or safetensors input could not be parsed or verified.
    Parse,
    /// A file could not be opened, read, written or renamed.
    Io,
    /// Host or device memory ran out, or a requested size would not fit.
    OutOfMemory,
    /// The requested device (for example CUDA) is not available.
    DeviceUnavailable,
    /// A file holds tensors that do not match the model (names, shapes or dtypes).
    Mismatch,
    /// An unexpected failure inside the library.
    Internal,
    /// A process group failed: a rank never arrived, died or timed out.
    Distributed,
    /// A code this version of the crate does not know.
    Other(i32),
}

impl ErrorCode {
    fn from_raw(code: i32) -> Self {
        match code as u32 {
            sys::OLM_ERR_INVALID_ARGUMENT => ErrorCode::InvalidArgument,
            sys::OLM_ERR_INVALID_CONFIG => ErrorCode::InvalidConfig,
            sys::OLM_ERR_PARSE => ErrorCode::Parse,
            sys::OLM_ERR_IO => ErrorCode::Io,
            sys::OLM_ERR_OUT_OF_MEMORY => ErrorCode::OutOfMemory,
            sys::OLM_ERR_DEVICE_UNAVAILABLE => ErrorCode::DeviceUnavailable,
            sys::OLM_ERR_MISMATCH => ErrorCode::Mismatch,
            sys::OLM_ERR_INTERNAL => ErrorCode::Internal,
            sys::OLM_ERR_DISTRIBUTED => ErrorCode::Distributed,
            _ => ErrorCode::Other(code),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::InvalidArgument => f.write_str("invalid argument"),
            ErrorCode::InvalidConfig => f.write_str("invalid config"),
            ErrorCode::Parse => f.write_str("parse error"),
            ErrorCode::Io => f.write_str("I/O error"),
            ErrorCode::OutOfMemory => f.write_str("out of memory"),
            ErrorCode::DeviceUnavailable => f.write_str("device unavailable"),
            ErrorCode::Mismatch => f.write_str("mismatch"),
            ErrorCode::Internal => f.write_str("internal error"),
            ErrorCode::Distributed => f.write_str("distributed error"),
            ErrorCode::Other(code) => write!(f, "error code {code}"),
        }
    }
}

/// An error reported by libolm (or by this crate for arguments C cannot represent).
///
/// `Display` shows the kind and the library's message, e.g.
/// `invalid argument: seq_len must be > 0`, without a crate prefix (callers add context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The kind of failure.
    pub code: ErrorCode,
    /// The library's message; it names the offending argument or config field.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// `Result<T, olm::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

fn check(err: *mut sys::olm_error) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL error returned by libolm is a valid, caller-owned object; its message
    // is a NUL-terminated string borrowed from it, copied here before olm_error_free releases
    // the error exactly once.
    unsafe {
        let code = ErrorCode::from_raw(sys::olm_error_code(err));
        let message = CStr::from_ptr(sys::olm_error_message(err)).to_string_lossy().into_owned();
        sys::olm_error_free(err);
        Err(Error { code, message })
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidArgument, message: message.into() }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("{what}: contains a NUL byte")))
}

fn path_cstring(path: &Path) -> Result<CString> {
    let s = path.to_str().ok_or_else(|| invalid("path: not valid UTF-8"))?;
    cstring(s, "path")
}

/// The slice's pointer, or for an empty slice a dangling but aligned, non-NULL one: libolm
/// refuses NULL pointers even with a length of 0, and reads nothing through them then.
fn nonnull_empty<T>(data: &[T]) -> *const T {
    if data.is_empty() {
        NonNull::<T>::dangling().as_ptr()
    } else {
        data.as_ptr()
    }
}

/// Copies and frees a library buffer.
fn take_buffer(buf: *mut sys::olm_buffer) -> Vec<u8> {
    // SAFETY: buf is a valid buffer that libolm just returned to us (callers only pass one
    // after a successful call); its data pointer covers size bytes until olm_buffer_free,
    // which is called exactly once, after the copy.
    unsafe {
        let data = sys::olm_buffer_data(buf);
        let size = sys::olm_buffer_size(buf);
        let out = if size == 0 || data.is_null() { Vec::new() } else { std::slice::from_raw_parts(data, size).to_vec() };
        sys::olm_buffer_free(buf);
        out
    }
}

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    // SAFETY: olm_version returns a static NUL-terminated string, never NULL.
    unsafe { CStr::from_ptr(sys::olm_version()).to_string_lossy().into_owned() }
}

/// The number of CUDA devices this process can use (0 without a GPU).
pub fn cuda_device_count() -> i32 {
    // SAFETY: no arguments, no preconditions.
    unsafe { sys::olm_cuda_device_count() }
}

/// Fills a C options struct with libolm's defaults (the `*_options_init_sized` functions).
macro_rules! default_options {
    ($ty:ty, $init:path) => {{
        // SAFETY: the options structs are plain C data (sizes, numbers, nullable pointers and
        // function pointers), for which all-zero bytes are a valid value; the init function
        // writes at most the size we pass, which is the struct's own size.
        let mut raw: $ty = unsafe { std::mem::zeroed() };
        unsafe { $init(&mut raw, std::mem::size_of::<$ty>()) };
        raw
    }};
}

mod hf;
pub use hf::{HfLoadOptions, HfSaveOptions};

/// A zeroed C result struct with its `struct_size` set, for libolm to fill.
macro_rules! out_struct {
    ($ty:ty) => {{
        // SAFETY: the result structs are plain C data (sizes, numbers, nullable pointers), for
        // which all-zero bytes are a valid value.
        let mut raw: $ty = unsafe { std::mem::zeroed() };
        raw.struct_size = std::mem::size_of::<$ty>();
        raw
    }};
}

/// The owned-handle boilerplate: the struct, `Drop` (the C free function), `Send`, `Debug`.
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $free:path) => {
        $(#[$doc])*
        pub struct $name {
            ptr: NonNull<$raw>,
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the pointer came from a successful libolm constructor, is owned by
                // this handle alone, and is freed exactly once, here.
                unsafe { $free(self.ptr.as_ptr()) }
            }
        }
        // SAFETY: olm.h allows any handle to be used from any thread, one thread at a time.
        // Moving the owner to another thread keeps it to one thread; the handle is not Sync
        // (NonNull is !Sync), so a shared reference never reaches a second thread.
        unsafe impl Send for $name {}
        impl $name {
            fn from_raw(ptr: *mut $raw) -> Self {
                $name { ptr: NonNull::new(ptr).expect("libolm returned NULL on success") }
            }
        }
    };
}

macro_rules! opaque_debug {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.ptr.as_ptr()).finish()
            }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Devices

/// Where a model's parameters live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory.
    #[default]
    Cpu,
    /// The CUDA device with this index (`Cuda(0)` is libolm's `"cuda"`).
    Cuda(u32),
}

impl Device {
    fn c_string(self) -> CString {
        CString::new(self.to_string()).expect("a device name has no NUL byte")
    }
}

impl fmt::Display for Device {
    /// libolm's spelling: `cpu` or `cuda:N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`, as libolm does.
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| invalid(format!("device: unknown device '{s}' (expected \"cpu\", \"cuda\" or \"cuda:N\")"))),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Configs

handle!(
    /// A validated model configuration (schema/olm.fbs `TransformerConfig`). Immutable.
    Config,
    sys::olm_config,
    sys::olm_config_free
);
opaque_debug!(Config);

impl Config {
    /// One of OLMo-core's presets, e.g. "olmo2_30M" or "llama3_8B".
    pub fn from_preset(name: &str, vocab_size: i64) -> Result<Config> {
        let name = cstring(name, "name")?;
        let mut out = ptr::null_mut();
        // SAFETY: name is a NUL-terminated string alive for the call; out is a valid out pointer.
        check(unsafe { sys::olm_config_from_preset(name.as_ptr(), vocab_size, &mut out) })?;
        Ok(Config::from_raw(out))
    }

    /// Parses and validates a JSON configuration.
    pub fn from_json(text: &str) -> Result<Config> {
        let mut out = ptr::null_mut();
        // SAFETY: text points to text.len() readable bytes for the call (no NUL needed).
        check(unsafe { sys::olm_config_from_json(nonnull_empty(text.as_bytes()) as *const c_char, text.len(), &mut out) })?;
        Ok(Config::from_raw(out))
    }

    /// Verifies and validates a binary configuration (identifier "OLMC").
    pub fn from_flatbuffer(data: &[u8]) -> Result<Config> {
        let mut out = ptr::null_mut();
        // SAFETY: data points to data.len() readable bytes, copied by libolm during the call.
        check(unsafe { sys::olm_config_from_flatbuffer(nonnull_empty(data) as *const c_void, data.len(), &mut out) })?;
        Ok(Config::from_raw(out))
    }

    /// The configuration as JSON text.
    pub fn to_json(&self) -> Result<String> {
        let mut buf = ptr::null_mut();
        // SAFETY: self.ptr is a live config; buf is a valid out pointer.
        check(unsafe { sys::olm_config_to_json(self.ptr.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    /// The configuration as a binary FlatBuffer (identifier "OLMC").
    pub fn to_flatbuffer(&self) -> Result<Vec<u8>> {
        let mut buf = ptr::null_mut();
        // SAFETY: self.ptr is a live config; buf is a valid out pointer.
        check(unsafe { sys::olm_config_to_flatbuffer(self.ptr.as_ptr(), &mut buf) })?;
        Ok(take_buffer(buf))
    }

    /// (total, non-embedding) parameters, counted as OLMo-core counts them.
    pub fn num_params(&self) -> Result<(i64, i64)> {
        let (mut total, mut non_embedding) = (0i64, 0i64);
        // SAFETY: self.ptr is a live config; both out pointers are valid.
        check(unsafe { sys::olm_config_num_params(self.ptr.as_ptr(), &mut total, &mut non_embedding) })?;
        Ok((total, non_embedding))
    }

    /// (active, active non-embedding) parameters: an MoE block counts top_k of its experts,
    /// as OLMo-core's num_active_params does; equal to [`Config::num_params`] for dense models.
    pub fn num_active_params(&self) -> Result<(i64, i64)> {
        let (mut active, mut active_non_embedding) = (0i64, 0i64);
        // SAFETY: self.ptr is a live config; both out pointers are valid.
        check(unsafe {
            sys::olm_config_num_active_params(self.ptr.as_ptr(), &mut active, &mut active_non_embedding)
        })?;
        Ok((active, active_non_embedding))
    }

    /// OLMo-core's idealized training FLOPs per token at a sequence length.
    pub fn num_flops_per_token(&self, seq_len: i64) -> Result<i64> {
        let mut flops = 0i64;
        // SAFETY: self.ptr is a live config; flops is a valid out pointer.
        check(unsafe { sys::olm_config_num_flops_per_token(self.ptr.as_ptr(), seq_len, &mut flops) })?;
        Ok(flops)
    }
}

// ------------------------------------------------------------------------------------------
// Tensors

/// Tensor element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit signed integers.
    Int32,
    /// 64-bit signed integers.
    Int64,
    /// IEEE 754 single precision.
    Float32,
    /// bfloat16.
    BFloat16,
    /// IEEE 754 half precision.
    Float16,
}

impl Dtype {
    fn raw(self) -> sys::olm_dtype {
        (match self {
            Dtype::Int32 => sys::OLM_DTYPE_INT32,
            Dtype::Int64 => sys::OLM_DTYPE_INT64,
            Dtype::Float32 => sys::OLM_DTYPE_FLOAT32,
            Dtype::BFloat16 => sys::OLM_DTYPE_BFLOAT16,
            Dtype::Float16 => sys::OLM_DTYPE_FLOAT16,
        }) as sys::olm_dtype
    }
    fn from_raw(raw: sys::olm_dtype) -> Result<Dtype> {
        Ok(match raw as u32 {
            sys::OLM_DTYPE_INT32 => Dtype::Int32,
            sys::OLM_DTYPE_INT64 => Dtype::Int64,
            sys::OLM_DTYPE_FLOAT32 => Dtype::Float32,
            sys::OLM_DTYPE_BFLOAT16 => Dtype::BFloat16,
            sys::OLM_DTYPE_FLOAT16 => Dtype::Float16,
            other => return Err(invalid(format!("unknown dtype {other}"))),
        })
    }
}

handle!(
    /// A dense tensor owned by libolm (host or device). `Debug` shows its dtype and shape.
    Tensor,
    sys::olm_tensor,
    sys::olm_tensor_free
);

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tensor");
        match (self.dtype(), self.shape()) {
            (Ok(dtype), Ok(shape)) => d.field("dtype", &dtype).field("shape", &shape),
            _ => d.field("ptr", &self.ptr.as_ptr()),
        }
        .finish()
    }
}

/// Element types that map to a libolm dtype (the private seal of [`Tensor::create`]).
trait Element: Copy + Default {
    const DTYPE: Dtype;
}
impl Element for i64 {
    const DTYPE: Dtype = Dtype::Int64;
}
impl Element for i32 {
    const DTYPE: Dtype = Dtype::Int32;
}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::Float32;
}

impl Tensor {
    fn from_raw_opt(ptr: *mut sys::olm_tensor) -> Option<Tensor> {
        NonNull::new(ptr).map(|ptr| Tensor { ptr })
    }

    fn create<T: Element>(data: &[T], shape: &[i64]) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        let bytes = std::mem::size_of_val(data);
        let p = if data.is_empty() { ptr::null() } else { data.as_ptr() as *const c_void };
        let s = if shape.is_empty() { ptr::null() } else { shape.as_ptr() };
        // SAFETY: p covers `bytes` readable bytes of T::DTYPE elements (or is NULL for an empty
        // tensor, which libolm allows); s covers shape.len() sizes (or is NULL for a scalar);
        // both are copied during the call.
        check(unsafe { sys::olm_tensor_create(T::DTYPE.raw(), s, shape.len(), p, bytes, &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// Copies `data` (row-major) into a new int64 tensor of `shape`.
    pub fn from_i64(data: &[i64], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(data, shape)
    }
    /// Copies `data` (row-major) into a new int32 tensor of `shape`.
    pub fn from_i32(data: &[i32], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(data, shape)
    }
    /// Copies `data` (row-major) into a new float32 tensor of `shape`.
    pub fn from_f32(data: &[f32], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(data, shape)
    }

    /// The element type.
    pub fn dtype(&self) -> Result<Dtype> {
        let mut raw: sys::olm_dtype = 0;
        // SAFETY: self.ptr is a live tensor; raw is a valid out pointer.
        check(unsafe { sys::olm_tensor_dtype(self.ptr.as_ptr(), &mut raw) })?;
        Dtype::from_raw(raw)
    }

    /// The sizes of the dimensions (empty for a scalar).
    pub fn shape(&self) -> Result<Vec<i64>> {
        let mut ndim = 0usize;
        // SAFETY: self.ptr is a live tensor; ndim is a valid out pointer.
        check(unsafe { sys::olm_tensor_ndim(self.ptr.as_ptr(), &mut ndim) })?;
        let mut shape = vec![0i64; ndim.max(1)];
        // SAFETY: shape holds at least ndim writable elements, the capacity we pass.
        check(unsafe { sys::olm_tensor_shape(self.ptr.as_ptr(), shape.as_mut_ptr(), ndim) })?;
        shape.truncate(ndim);
        Ok(shape)
    }

    fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let have = self.dtype()?;
        if have != T::DTYPE {
            return Err(invalid(format!("tensor: dtype is {have:?}, not {:?}", T::DTYPE)));
        }
        let mut nbytes = 0usize;
        // SAFETY: self.ptr is a live tensor; nbytes is a valid out pointer.
        check(unsafe { sys::olm_tensor_nbytes(self.ptr.as_ptr(), &mut nbytes) })?;
        let mut out = vec![T::default(); nbytes / std::mem::size_of::<T>()];
        // SAFETY: the dtype is T's, so out's nbytes writable bytes hold exactly the elements
        // (libolm writes nothing when the size would not fit); the library only writes
        // plain element values, valid for T.
        check(unsafe { sys::olm_tensor_copy_to_host(self.ptr.as_ptr(), out.as_mut_ptr() as *mut c_void, nbytes) })?;
        Ok(out)
    }

    /// The elements of a float32 tensor, row-major (copied from any device).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_vec()
    }
    /// The elements of an int64 tensor, row-major.
    pub fn to_vec_i64(&self) -> Result<Vec<i64>> {
        self.to_vec()
    }
    /// The elements of an int32 tensor, row-major.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        self.to_vec()
    }
}

// ------------------------------------------------------------------------------------------
// Models

/// Options for [`Model::new`]; `Default` is libolm's defaults.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    raw: sys::olm_model_options,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { raw: default_options!(sys::olm_model_options, sys::olm_model_options_init_sized) }
    }
}

impl ModelOptions {
    /// Parameter dtype (`None`: the config's).
    pub fn param_dtype(mut self, dtype: Option<Dtype>) -> Self {
        self.raw.param_dtype = dtype.map_or(-1, |d| d.raw());
        self
    }
    /// Initialize weights (default true); false leaves them zero for a load to follow.
    pub fn init_weights(mut self, init: bool) -> Self {
        self.raw.init_weights = init as i32;
        self
    }
}

/// Loss reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// The mean over the target (non-ignored) positions.
    Mean,
    /// The sum over the target positions.
    Sum,
    /// One loss per position, shape (batch, positions).
    None,
}

/// Options for [`Model::forward_with`]; `Default` is libolm's (all logits, no documents).
/// The lifetime ties the options to the `cu_doc_lens` tensor they borrow.
#[derive(Clone, Debug)]
pub struct ForwardOptions<'a> {
    raw: sys::olm_forward_options,
    _documents: PhantomData<&'a Tensor>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        ForwardOptions {
            raw: default_options!(sys::olm_forward_options, sys::olm_forward_options_init_sized),
            _documents: PhantomData,
        }
    }
}

impl<'a> ForwardOptions<'a> {
    /// Keep only the logits of the last `n` positions; 0 (the default) keeps all.
    pub fn logits_to_keep(mut self, n: i64) -> Self {
        self.raw.logits_to_keep = n;
        self
    }
    /// Intra-document masking: OLMo-core's cumulative document lengths (int32/int64, 1-D,
    /// 0 ..= batch * seq_len, every row a boundary, as [`Batch`]'s) and an upper bound on the
    /// longest document (0: computed). Attention stays inside documents and RoPE positions
    /// restart in each.
    pub fn documents(mut self, cu_doc_lens: &'a Tensor, max_doc_len: i64) -> Self {
        self.raw.cu_doc_lens = cu_doc_lens.ptr.as_ptr();
        self.raw.max_doc_len = max_doc_len;
        self
    }
}

/// Options for [`Model::loss`]; `Default` is libolm's (ignore -100, mean, no z-loss).
/// The lifetime ties the options to the `cu_doc_lens` tensor they may borrow.
#[derive(Clone, Debug)]
pub struct LossOptions<'a> {
    raw: sys::olm_loss_options,
    _documents: PhantomData<&'a Tensor>,
}

impl Default for LossOptions<'_> {
    fn default() -> Self {
        LossOptions { raw: default_options!(sys::olm_loss_options, sys::olm_loss_options_init_sized), _documents: PhantomData }
    }
}

impl<'a> LossOptions<'a> {
    /// Intra-document masking, as [`ForwardOptions::documents`].
    pub fn documents(mut self, cu_doc_lens: &'a Tensor, max_doc_len: i64) -> Self {
        self.raw.cu_doc_lens = cu_doc_lens.ptr.as_ptr();
        self.raw.max_doc_len = max_doc_len;
        self
    }
    /// Labels equal to this are ignored (default -100).
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.raw.ignore_index = index;
        self
    }
    /// How losses are reduced over positions (default [`Reduction::Mean`]).
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.raw.loss_reduction = (match reduction {
            Reduction::Mean => sys::OLM_LOSS_REDUCTION_MEAN,
            Reduction::Sum => sys::OLM_LOSS_REDUCTION_SUM,
            Reduction::None => sys::OLM_LOSS_REDUCTION_NONE,
        }) as sys::olm_loss_reduction;
        self
    }
    /// The z-loss multiplier; 0 (the default) disables the z-loss.
    pub fn z_loss_multiplier(mut self, multiplier: f64) -> Self {
        self.raw.z_loss_multiplier = multiplier;
        self
    }
    /// OLMo-core's loss_div_factor: every loss is divided by it; 0 (the default) is unset (the
    /// LM losses are not divided, the MoE losses are divided by the number of input tokens).
    pub fn loss_div_factor(mut self, factor: f64) -> Self {
        self.raw.loss_div_factor = factor;
        self
    }
    /// Also return the float32 logits in [`LossOutput::logits`] (default false).
    pub fn return_logits(mut self, yes: bool) -> Self {
        self.raw.return_logits = yes as i32;
        self
    }
    /// Compute the loss over the last `n` positions only; 0 (the default) uses all.
    pub fn logits_to_keep(mut self, n: i64) -> Self {
        self.raw.logits_to_keep = n;
        self
    }
}

/// The losses of [`Model::loss`].
#[derive(Debug)]
pub struct LossOutput {
    /// The loss to optimize: ce_loss + z_loss, divided by the loss_div_factor. A scalar for
    /// mean and sum reductions, (batch, positions) for [`Reduction::None`].
    pub loss: Tensor,
    /// The cross-entropy part, shaped like `loss`.
    pub ce_loss: Tensor,
    /// The z-loss part, shaped like `loss`; `None` when the z-loss is disabled.
    pub z_loss: Option<Tensor>,
    /// The float32 logits when [`LossOptions::return_logits`] asked for them.
    pub logits: Option<Tensor>,
    /// `loss` as a number for mean and sum reductions (0 for none).
    pub loss_value: f64,
    /// `ce_loss` as a number for mean and sum reductions (0 for none).
    pub ce_loss_value: f64,
    /// `z_loss` as a number for mean and sum reductions (0 for none or without z-loss).
    pub z_loss_value: f64,
    /// MoE models: the routers' weighted load-balancing loss (summed over blocks, not part
    /// of `loss`); `None` for dense models.
    pub lb_loss: Option<Tensor>,
    /// MoE models: the routers' weighted z-loss (summed over blocks, not part of `loss`);
    /// `None` for dense models.
    pub router_z_loss: Option<Tensor>,
    /// `lb_loss` as a number (0 for dense models).
    pub lb_loss_value: f64,
    /// `router_z_loss` as a number (0 for dense models).
    pub router_z_loss_value: f64,
}

/// A parameter tensor's description (OLMo-core state-dict name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterInfo {
    /// The OLMo-core state-dict name, e.g. "blocks.0.attention.w_q.weight".
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The sizes of the dimensions.
    pub shape: Vec<i64>,
    /// False when the config's `freeze_params` matches the name.
    pub trainable: bool,
}

/// Options for [`Model::generate`]; `Default` is libolm's.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    max_new_tokens: i64,
    temperature: f64,
    top_k: i64,
    top_p: f64,
    seed: u64,
    stop_tokens: Vec<i64>,
    use_kv_cache: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        let raw = default_options!(sys::olm_generate_options, sys::olm_generate_options_init_sized);
        GenerateOptions {
            max_new_tokens: raw.max_new_tokens,
            temperature: raw.temperature,
            top_k: raw.top_k,
            top_p: raw.top_p,
            seed: raw.seed,
            stop_tokens: Vec::new(),
            use_kv_cache: raw.use_kv_cache != 0,
        }
    }
}

impl GenerateOptions {
    /// The most tokens to generate (default 32).
    pub fn max_new_tokens(mut self, n: i64) -> Self {
        self.max_new_tokens = n;
        self
    }
    /// Sampling temperature (default 1); 0 is greedy decoding.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// Sample only among the `k` most likely tokens; 0 (the default) disables.
    pub fn top_k(mut self, k: i64) -> Self {
        self.top_k = k;
        self
    }
    /// Nucleus sampling: the smallest set of tokens with this much mass; 1 (the default)
    /// disables.
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = p;
        self
    }
    /// The seed of the sampler's random generator (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Generation ends after one of these tokens is produced.
    pub fn stop_tokens(mut self, tokens: &[i64]) -> Self {
        self.stop_tokens = tokens.to_vec();
        self
    }
    /// Decode with the KV cache (default true); false re-runs the whole sequence per token.
    pub fn use_kv_cache(mut self, yes: bool) -> Self {
        self.use_kv_cache = yes;
        self
    }
}

handle!(
    /// A transformer language model.
    ///
    /// Not `Sync`: a model is used by one thread at a time. It may move to another thread
    /// (`Send`), unless a [`Trainer`] borrows it:
    ///
    /// ```compile_fail,E0277
    /// # use olm::*;
    /// # let model = Model::new(&Config::from_preset("olmo2_1M", 64)?, Device::Cpu, &ModelOptions::default())?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| model.num_params()); // error: `Model` cannot be shared between threads
    ///     model.num_params()
    /// })?;
    /// # Ok::<(), olm::Error>(())
    /// ```
    Model,
    sys::olm_model,
    sys::olm_model_free
);
opaque_debug!(Model);

/// State shared with a C callback: the Rust closure and a panic caught inside it.
struct CallbackState<'a, F: ?Sized> {
    callback: &'a mut F,
    panic: Option<Box<dyn Any + Send>>,
}

/// `olm_token_callback` for [`Model::generate`].
///
/// # Safety
/// `user_data` must be the `CallbackState<dyn FnMut(i64) -> bool>` that `Model::generate`
/// passed with this callback, alive and not otherwise borrowed during the C call.
unsafe extern "C" fn token_trampoline(token: i64, user_data: *mut c_void) -> i32 {
    // SAFETY: per the contract above; libolm calls back on the calling thread, during
    // olm_model_generate, while Model::generate holds the state exclusively.
    let state = unsafe { &mut *(user_data as *mut CallbackState<dyn FnMut(i64) -> bool>) };
    if state.panic.is_some() {
        return 1;
    }
    match catch_unwind(AssertUnwindSafe(|| (state.callback)(token))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(panic) => {
            state.panic = Some(panic);
            1
        }
    }
}

impl Model {
    /// Builds a model on a device and initializes its weights (unless the options say not).
    pub fn new(config: &Config, device: Device, options: &ModelOptions) -> Result<Model> {
        let device = device.c_string();
        let mut out = ptr::null_mut();
        // SAFETY: config is live; device is NUL-terminated; options.raw is a whole
        // olm_model_options with struct_size set by its init function; out is valid.
        check(unsafe { sys::olm_model_create(config.ptr.as_ptr(), device.as_ptr(), &options.raw, &mut out) })?;
        Ok(Model::from_raw(out))
    }

    /// float32 logits (batch, seq, vocab) for int32/int64 ids (batch, seq), at every
    /// position; [`Model::forward_with`] keeps fewer positions or masks documents.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with(input_ids, &ForwardOptions::default())
    }

    /// float32 logits with [`ForwardOptions`] (logits to keep, intra-document masking).
    pub fn forward_with(&self, input_ids: &Tensor, options: &ForwardOptions) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        // SAFETY: the model and input tensor are live and, being !Sync and borrowed, not used
        // by another thread; options.raw is a whole initialized struct whose cu_doc_lens (if
        // set) points to a tensor the options' lifetime keeps alive; out is valid.
        check(unsafe { sys::olm_model_forward(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), &options.raw, &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// Cross-entropy (+ z-loss) against labels (not shifted; -100 by default is ignored).
    pub fn loss(&self, input_ids: &Tensor, labels: &Tensor, options: &LossOptions) -> Result<LossOutput> {
        let mut res = out_struct!(sys::olm_loss_result);
        // SAFETY: as in forward_with; res has struct_size set and is filled only on success,
        // after which its tensors are owned by us (wrapped below, each freed once).
        check(unsafe {
            sys::olm_model_loss(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), labels.ptr.as_ptr(), &options.raw, &mut res)
        })?;
        Ok(LossOutput {
            loss: Tensor::from_raw(res.loss),
            ce_loss: Tensor::from_raw(res.ce_loss),
            z_loss: Tensor::from_raw_opt(res.z_loss),
            logits: Tensor::from_raw_opt(res.logits),
            loss_value: res.loss_value,
            ce_loss_value: res.ce_loss_value,
            z_loss_value: res.z_loss_value,
            lb_loss: Tensor::from_raw_opt(res.lb_loss),
            router_z_loss: Tensor::from_raw_opt(res.router_z_loss),
            lb_loss_value: res.lb_loss_value,
            router_z_loss_value: res.router_z_loss_value,
        })
    }

    /// The number of parameter elements.
    pub fn num_params(&self) -> Result<i64> {
        let mut n = 0i64;
        // SAFETY: self.ptr is a live model; n is a valid out pointer.
        check(unsafe { sys::olm_model_num_params(self.ptr.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// Renormalizes an nGPT model's embeddings and matrices to unit norm (the trainer does
    /// this after every step); an error for models whose config name is not "normalized".
    pub fn normalize_matrices(&mut self) -> Result<()> {
        // SAFETY: self.ptr is a live model, borrowed exclusively.
        check(unsafe { sys::olm_model_normalize_matrices(self.ptr.as_ptr()) })
    }

    /// The parameters in state-dict order.
    pub fn parameters(&self) -> Result<Vec<ParameterInfo>> {
        let mut count = 0usize;
        // SAFETY: self.ptr is a live model; count is a valid out pointer.
        check(unsafe { sys::olm_model_parameter_count(self.ptr.as_ptr(), &mut count) })?;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let mut info = out_struct!(sys::olm_parameter_info);
            // SAFETY: i < count; info has struct_size set.
            check(unsafe { sys::olm_model_parameter_info(self.ptr.as_ptr(), i, &mut info) })?;
            // SAFETY: on success name is a NUL-terminated string and shape holds ndim sizes,
            // both borrowed from the model, which self keeps alive; they are copied here.
            let (name, shape) = unsafe {
                (
                    CStr::from_ptr(info.name).to_string_lossy().into_owned(),
                    if info.ndim == 0 { Vec::new() } else { std::slice::from_raw_parts(info.shape, info.ndim).to_vec() },
                )
            };
            out.push(ParameterInfo { name, dtype: Dtype::from_raw(info.dtype)?, shape, trainable: info.trainable != 0 });
        }
        Ok(out)
    }

    /// Loads OLMo-core-named weights; the model is unchanged on error.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        // SAFETY: self.ptr is a live model, borrowed exclusively; path is NUL-terminated.
        check(unsafe { sys::olm_model_load_safetensors(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Writes the weights atomically with OLMo-core names.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        // SAFETY: self.ptr is a live model; path is NUL-terminated.
        check(unsafe { sys::olm_model_save_safetensors(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Samples tokens after `prompt` ((T,) or (1, T)). `on_token`, when given, sees each token
    /// as it is produced and stops generation by returning false. A panic inside it stops
    /// generation and is resumed here after libolm returns.
    ///
    /// Takes `&mut self` because `olm.h` forbids the callback to call back into the same
    /// model; the borrow checker enforces it:
    ///
    /// ```compile_fail,E0502
    /// # use olm::*;
    /// # let mut model = Model::new(&Config::from_preset("olmo2_1M", 64)?, Device::Cpu, &ModelOptions::default())?;
    /// # let prompt = Tensor::from_i64(&[1, 2], &[2])?;
    /// let mut peek = |_token: i64| model.num_params().is_ok(); // borrows the model
    /// model.generate(&prompt, &GenerateOptions::default(), Some(&mut peek))?; // error
    /// # Ok::<(), olm::Error>(())
    /// ```
    pub fn generate(
        &mut self,
        prompt: &Tensor,
        options: &GenerateOptions,
        on_token: Option<&mut dyn FnMut(i64) -> bool>,
    ) -> Result<Vec<i64>> {
        let mut raw = default_options!(sys::olm_generate_options, sys::olm_generate_options_init_sized);
        raw.max_new_tokens = options.max_new_tokens;
        raw.temperature = options.temperature;
        raw.top_k = options.top_k;
        raw.top_p = options.top_p;
        raw.seed = options.seed;
        raw.use_kv_cache = options.use_kv_cache as i32;
        if !options.stop_tokens.is_empty() {
            raw.stop_tokens = options.stop_tokens.as_ptr();
            raw.num_stop_tokens = options.stop_tokens.len();
        }
        let mut state = on_token.map(|callback| CallbackState { callback, panic: None });
        if let Some(state) = state.as_mut() {
            raw.on_token = Some(token_trampoline);
            raw.user_data = state as *mut CallbackState<dyn FnMut(i64) -> bool> as *mut c_void;
        }
        let mut out = ptr::null_mut();
        // SAFETY: the model (borrowed exclusively) and prompt are live; raw's stop_tokens
        // point into `options`, alive for the call; user_data points to `state`, which lives
        // on this frame until after the call and is touched by nobody else meanwhile, as
        // token_trampoline requires.
        let result = check(unsafe { sys::olm_model_generate(self.ptr.as_ptr(), prompt.ptr.as_ptr(), &raw, &mut out) });
        if let Some(panic) = state.and_then(|s| s.panic) {
            if !out.is_null() {
                drop(Tensor::from_raw(out));
            }
            std::panic::resume_unwind(panic);
        }
        result?;
        Tensor::from_raw(out).to_vec_i64()
    }
}

// ------------------------------------------------------------------------------------------
// Training

handle!(
    /// A validated training configuration (schema/olm.fbs `TrainConfig`). Immutable.
    TrainConfig,
    sys::olm_train_config,
    sys::olm_train_config_free
);
opaque_debug!(TrainConfig);

impl TrainConfig {
    /// Parses and validates a JSON training configuration.
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let mut out = ptr::null_mut();
        // SAFETY: text points to text.len() readable bytes for the call (no NUL needed).
        check(unsafe { sys::olm_train_config_from_json(nonnull_empty(text.as_bytes()) as *const c_char, text.len(), &mut out) })?;
        Ok(TrainConfig::from_raw(out))
    }

    /// Verifies a binary training configuration (identifier "OLMT").
    pub fn from_flatbuffer(data: &[u8]) -> Result<TrainConfig> {
        let mut out = ptr::null_mut();
        // SAFETY: data points to data.len() readable bytes, copied during the call.
        check(unsafe { sys::olm_train_config_from_flatbuffer(nonnull_empty(data) as *const c_void, data.len(), &mut out) })?;
        Ok(TrainConfig::from_raw(out))
    }

    /// The training configuration as JSON text.
    pub fn to_json(&self) -> Result<String> {
        let mut buf = ptr::null_mut();
        // SAFETY: self.ptr is a live train config; buf is a valid out pointer.
        check(unsafe { sys::olm_train_config_to_json(self.ptr.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    /// The training configuration as a binary FlatBuffer (identifier "OLMT").
    pub fn to_flatbuffer(&self) -> Result<Vec<u8>> {
        let mut buf = ptr::null_mut();
        // SAFETY: self.ptr is a live train config; buf is a valid out pointer.
        check(unsafe { sys::olm_train_config_to_flatbuffer(self.ptr.as_ptr(), &mut buf) })?;
        Ok(take_buffer(buf))
    }

    /// The model configuration it names (`model` or `model_preset`).
    pub fn model(&self) -> Result<Config> {
        let mut out = ptr::null_mut();
        // SAFETY: self.ptr is a live train config; out is a valid out pointer.
        check(unsafe { sys::olm_train_config_model(self.ptr.as_ptr(), &mut out) })?;
        Ok(Config::from_raw(out))
    }
}

/// A validation loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalMetrics {
    /// Mean cross-entropy per target token.
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Target tokens evaluated.
    pub tokens: i64,
}

impl From<&sys::olm_eval_metrics> for EvalMetrics {
    fn from(m: &sys::olm_eval_metrics) -> Self {
        EvalMetrics { loss: m.loss, perplexity: m.perplexity, tokens: m.tokens }
    }
}

/// Trains a model in place: an optimizer, a scheduler and counters over a [`Model`].
///
/// The trainer and its model are one object for threading (`olm.h`): [`Trainer::new`]
/// borrows the model mutably for the trainer's lifetime `'m`, so the model cannot be used
/// elsewhere, on this thread or another, while the trainer lives; reach it through
/// [`Trainer::model`] and [`Trainer::model_mut`] instead. A process group given to
/// [`Trainer::set_dist`] is borrowed for `'m` too. The trainer is `Send` (it moves together
/// with what it borrows) and not `Sync`.
///
/// ```no_run
/// # use olm::*;
/// # let tcfg = TrainConfig::from_json("{}")?;
/// # let x = Tensor::from_i64(&[1, 2], &[1, 2])?;
/// let mut model = Model::new(&tcfg.model()?, Device::Cpu, &ModelOptions::default())?;
/// let mut trainer = Trainer::new(&mut model, &tcfg)?;
/// trainer.step(&x, None)?;
/// let logits = trainer.model().forward(&x)?; // the model, through its trainer
/// drop(trainer);
/// model.save_safetensors("model.safetensors")?; // the trainer is gone: the model is free
/// # Ok::<(), olm::Error>(())
/// ```
///
/// Using the model directly while its trainer lives does not compile:
///
/// ```compile_fail,E0502
/// # use olm::*;
/// # let tcfg = TrainConfig::from_json("{}")?;
/// # let x = Tensor::from_i64(&[1, 2], &[1, 2])?;
/// let mut model = Model::new(&tcfg.model()?, Device::Cpu, &ModelOptions::default())?;
/// let mut trainer = Trainer::new(&mut model, &tcfg)?;
/// let logits = model.forward(&x)?; // error: the model is mutably borrowed by the trainer
/// trainer.step(&x, None)?;
/// # Ok::<(), olm::Error>(())
/// ```
///
/// nor does moving it to another thread while the trainer steps on this one:
///
/// ```compile_fail,E0505
/// # use olm::*;
/// # let tcfg = TrainConfig::from_json("{}")?;
/// # let x = Tensor::from_i64(&[1, 2], &[1, 2])?;
/// let mut model = Model::new(&tcfg.model()?, Device::Cpu, &ModelOptions::default())?;
/// let mut trainer = Trainer::new(&mut model, &tcfg)?;
/// let other = std::thread::spawn(move || model.num_params()); // error: model is borrowed
/// trainer.step(&x, None)?;
/// # Ok::<(), olm::Error>(())
/// ```
///
/// nor using a process group while a trainer issues collectives on it:
///
/// ```compile_fail,E0499
/// # use olm::*;
/// # let tcfg = TrainConfig::from_json("{}")?;
/// # let x = Tensor::from_i64(&[1, 2], &[1, 2])?;
/// let mut dist = Dist::new(&DistOptions::default())?;
/// let mut model = Model::new(&tcfg.model()?, Device::Cpu, &ModelOptions::default())?;
/// let mut trainer = Trainer::new(&mut model, &tcfg)?;
/// trainer.set_dist(Some(&mut dist))?;
/// dist.barrier()?; // error: the trainer holds the group
/// trainer.step(&x, None)?;
/// # Ok::<(), olm::Error>(())
/// ```
pub struct Trainer<'m> {
    ptr: NonNull<sys::olm_trainer>,
    model: &'m mut Model,
    dist: Option<&'m mut Dist>,
}

impl Drop for Trainer<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from olm_trainer_create, is owned by this trainer alone,
        // and is freed exactly once, here (the C trainer's references to the model and group
        // are dropped with it; the Rust handles outlive it anyway).
        unsafe { sys::olm_trainer_free(self.ptr.as_ptr()) }
    }
}

// SAFETY: olm.h allows a trainer (with its model and process group, one object for
// threading) to be used from any thread, one at a time. The trainer holds exclusive borrows
// of both, so moving it moves the only access to all three; it is not Sync (NonNull), so a
// shared reference never reaches another thread.
unsafe impl Send for Trainer<'_> {}

impl fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer").field("ptr", &self.ptr.as_ptr()).field("model", &self.model).field("dist", &self.dist).finish()
    }
}

/// Options for [`Trainer::fit`]: evaluation data, callbacks and document masking. `Default`
/// is libolm's (no evaluation data, no callbacks, masking as the train config says).
#[derive(Default)]
pub struct FitOptions<'a> {
    eval_data: Option<&'a Dataset>,
    on_step: Option<&'a mut dyn FnMut(&StepMetrics) -> bool>,
    on_log: Option<&'a mut dyn FnMut(&str)>,
    document_masking: Option<bool>,
}

impl fmt::Debug for FitOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FitOptions")
            .field("eval_data", &self.eval_data)
            .field("on_step", &self.on_step.is_some())
            .field("on_log", &self.on_log.is_some())
            .field("document_masking", &self.document_masking)
            .finish()
    }
}

impl<'a> FitOptions<'a> {
    /// Evaluated every eval_interval steps of the train config and at the end.
    pub fn eval_data(mut self, data: &'a Dataset) -> Self {
        self.eval_data = Some(data);
        self
    }
    /// Sees each step's metrics; returning false stops training cleanly (a checkpoint is
    /// saved first when the config has a save_folder).
    pub fn on_step(mut self, callback: &'a mut dyn FnMut(&StepMetrics) -> bool) -> Self {
        self.on_step = Some(callback);
        self
    }
    /// Sees the library's progress messages (checkpoints saved, evaluations).
    pub fn on_log(mut self, callback: &'a mut dyn FnMut(&str)) -> Self {
        self.on_log = Some(callback);
        self
    }
    /// Intra-document masking from the datasets' document boundaries, on or off for training
    /// and evaluation; unset follows the train config (`data.generate_doc_lengths`,
    /// `eval_data.generate_doc_lengths`).
    pub fn document_masking(mut self, on: bool) -> Self {
        self.document_masking = Some(on);
        self
    }
}

/// Options for [`Trainer::evaluate`]; `Default` evaluates the whole dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvalOptions {
    max_batches: Option<u64>,
}

impl EvalOptions {
    /// Evaluate at most `n` (>= 1) batches of the config's global batch size.
    pub fn max_batches(mut self, n: u64) -> Self {
        self.max_batches = Some(n);
        self
    }
}

struct FitState<'a> {
    on_step: Option<&'a mut dyn FnMut(&StepMetrics) -> bool>,
    on_log: Option<&'a mut dyn FnMut(&str)>,
    panic: Option<Box<dyn Any + Send>>,
}

/// `olm_metrics_callback` for [`Trainer::fit`].
///
/// # Safety
/// `user_data` must be the `FitState` that `Trainer::fit` passed, alive and not otherwise
/// borrowed during the C call; `m` must point to valid metrics for the call.
unsafe extern "C" fn step_trampoline(m: *const sys::olm_step_metrics, user_data: *mut c_void) -> i32 {
    // SAFETY: per the contract above; libolm calls back on the calling thread, during
    // olm_trainer_fit, while Trainer::fit holds the state exclusively.
    let state = unsafe { &mut *(user_data as *mut FitState) };
    if state.panic.is_some() {
        return 1;
    }
    // SAFETY: libolm passes metrics valid for the duration of the call.
    let metrics = StepMetrics::from(unsafe { &*m });
    let Some(cb) = state.on_step.as_mut() else { return 0 };
    match catch_unwind(AssertUnwindSafe(|| cb(&metrics))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(panic) => {
            state.panic = Some(panic);
            1
        }
    }
}

/// `olm_log_callback` for [`Trainer::fit`].
///
/// # Safety
/// As [`step_trampoline`]; `message` is NULL or a NUL-terminated string valid for the call.
unsafe extern "C" fn log_trampoline(message: *const c_char, user_data: *mut c_void) {
    // SAFETY: as in step_trampoline.
    let state = unsafe { &mut *(user_data as *mut FitState) };
    if state.panic.is_some() || message.is_null() {
        return;
    }
    // SAFETY: message is a non-NULL NUL-terminated string valid for the call; copied here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    if let Some(cb) = state.on_log.as_mut() {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| cb(&text))) {
            state.panic = Some(panic);
        }
    }
}

impl<'m> Trainer<'m> {
    /// Creates a trainer for a model, which it borrows (mutably) for as long as it lives.
    pub fn new(model: &'m mut Model, config: &TrainConfig) -> Result<Trainer<'m>> {
        let mut out = ptr::null_mut();
        // SAFETY: the model (borrowed exclusively) and the train config are live; out is
        // valid. The C trainer keeps its own reference to the model.
        check(unsafe { sys::olm_trainer_create(model.ptr.as_ptr(), config.ptr.as_ptr(), &mut out) })?;
        Ok(Trainer { ptr: NonNull::new(out).expect("libolm returned NULL on success"), model, dist: None })
    }

    /// The model being trained (for forward, loss, saving weights between steps).
    pub fn model(&self) -> &Model {
        &*self.model
    }

    /// The model being trained, mutably (for generation or loading weights between steps).
    pub fn model_mut(&mut self) -> &mut Model {
        &mut *self.model
    }

    /// The process group given to [`Trainer::set_dist`], if any.
    pub fn dist(&self) -> Option<&Dist> {
        self.dist.as_deref()
    }

    /// One optimizer step; `labels: None` uses OLMo-core's shifted labels.
    pub fn step(&mut self, input_ids: &Tensor, labels: Option<&Tensor>) -> Result<StepMetrics> {
        let mut m = out_struct!(sys::olm_step_metrics);
        let l = labels.map_or(ptr::null(), |t| t.ptr.as_ptr() as *const _);
        // SAFETY: the trainer is borrowed exclusively (and with it its model and group); the
        // tensors are live (labels may be NULL); m has struct_size set.
        check(unsafe { sys::olm_trainer_step(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), l, &mut m) })?;
        Ok(StepMetrics::from(&m))
    }

    /// One optimizer step with intra-document masking: `cu_doc_lens` as in
    /// [`ForwardOptions::documents`] (a [`Batch`]'s qualifies).
    pub fn step_documents(&mut self, input_ids: &Tensor, labels: Option<&Tensor>, cu_doc_lens: &Tensor) -> Result<StepMetrics> {
        let mut m = out_struct!(sys::olm_step_metrics);
        let l = labels.map_or(ptr::null(), |t| t.ptr.as_ptr() as *const _);
        // SAFETY: as in step; cu_doc_lens is live and only read during the call.
        check(unsafe {
            sys::olm_trainer_step_documents(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), l, cu_doc_lens.ptr.as_ptr(), &mut m)
        })?;
        Ok(StepMetrics::from(&m))
    }

    /// Trains data-parallel over a process group (every rank calls this; rank 0's weights are
    /// broadcast). Afterwards [`Trainer::step`] takes this rank's part of the global batch and
    /// [`Trainer::fit`] gives each rank its slice. `None` detaches. The group stays borrowed
    /// by the trainer until it is dropped, since the trainer issues collectives on it; read
    /// it meanwhile through [`Trainer::dist`].
    pub fn set_dist(&mut self, dist: Option<&'m mut Dist>) -> Result<()> {
        let d = dist.as_ref().map_or(ptr::null_mut(), |d| d.ptr.as_ptr());
        // SAFETY: the trainer and the group (if any) are live and borrowed exclusively; the C
        // trainer keeps its own reference to the group.
        check(unsafe { sys::olm_trainer_set_dist(self.ptr.as_ptr(), d) })?;
        self.dist = dist;
        Ok(())
    }

    /// Where this rank sits in the device mesh: which part of each global batch
    /// [`Trainer::step`] wants, and its tensor- and context-parallel groups (the train
    /// config's `tensor_parallel` / `context_parallel` sections).
    pub fn layout(&self) -> Result<TrainerLayout> {
        let mut l = out_struct!(sys::olm_trainer_layout);
        // SAFETY: self.ptr is a live trainer; l has struct_size set.
        check(unsafe { sys::olm_trainer_layout_get(self.ptr.as_ptr(), &mut l) })?;
        Ok(TrainerLayout {
            data_parallel_rank: l.data_parallel_rank,
            data_parallel_size: l.data_parallel_size,
            tensor_parallel_rank: l.tensor_parallel_rank,
            tensor_parallel_size: l.tensor_parallel_size,
            context_parallel_rank: l.context_parallel_rank,
            context_parallel_size: l.context_parallel_size,
        })
    }

    /// Writes `<folder>/step<N>` atomically; returns its path. With a process group
    /// ([`Trainer::set_dist`]) a collective that every rank calls: each rank writes its shard
    /// (`rank<r>.safetensors`) and the checkpoint appears once all have finished.
    pub fn save_checkpoint(&mut self, folder: impl AsRef<Path>) -> Result<String> {
        let folder = path_cstring(folder.as_ref())?;
        let mut buf = ptr::null_mut();
        // SAFETY: the trainer is borrowed exclusively; folder is NUL-terminated; buf is valid.
        check(unsafe { sys::olm_trainer_save_checkpoint(self.ptr.as_ptr(), folder.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    /// Restores a checkpoint directory, or a save folder's newest checkpoint, single-process
    /// or sharded (at any world size).
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        // SAFETY: the trainer is borrowed exclusively; path is NUL-terminated.
        check(unsafe { sys::olm_trainer_load_checkpoint(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Trains until the config's max_steps (or until the step callback returns false);
    /// returns the last evaluation (default when none ran).
    pub fn fit(&mut self, data: &Dataset, options: FitOptions<'_>) -> Result<EvalMetrics> {
        self.fit_data(Some(data), options)
    }

    /// Trains until the config's max_steps on the train config's `data` section, evaluating
    /// `options`' eval data (or, when it has none, the config's `eval_data` section): the run
    /// `olm train` makes from the same JSON. To stop on SIGTERM or SIGINT with a checkpoint, as
    /// `olm train` does, have the step callback return `false` once a signal flag is set.
    pub fn fit_from_config(&mut self, options: FitOptions<'_>) -> Result<EvalMetrics> {
        self.fit_data(None, options)
    }

    fn fit_data(&mut self, data: Option<&Dataset>, options: FitOptions<'_>) -> Result<EvalMetrics> {
        let mut opts = default_options!(sys::olm_fit_options, sys::olm_fit_options_init_sized);
        if let Some(masking) = options.document_masking {
            opts.document_masking = masking as i32;
        }
        if let Some(e) = options.eval_data {
            opts.eval_data = e.ptr.as_ptr();
        }
        let mut state = FitState { on_step: options.on_step, on_log: options.on_log, panic: None };
        opts.on_step = Some(step_trampoline);
        opts.on_log = Some(log_trampoline);
        opts.user_data = &mut state as *mut FitState as *mut c_void;
        let mut out = out_struct!(sys::olm_eval_metrics);
        let data = data.map_or(ptr::null(), |d| d.ptr.as_ptr() as *const _);
        // SAFETY: the trainer is borrowed exclusively; the datasets, when given, are live
        // (borrowed for the call); user_data points to `state`, which lives on this frame until
        // after the call and is touched by nobody else meanwhile, as the trampolines require.
        let result = check(unsafe { sys::olm_trainer_fit(self.ptr.as_ptr(), data, &opts, &mut out) });
        if let Some(panic) = state.panic.take() {
            std::panic::resume_unwind(panic);
        }
        result?;
        Ok(EvalMetrics::from(&out))
    }

    /// Validation loss and perplexity over a dataset's instances, in order.
    pub fn evaluate(&mut self, data: &Dataset, options: &EvalOptions) -> Result<EvalMetrics> {
        let max_batches = match options.max_batches {
            None => 0,
            Some(0) => return Err(invalid("max_batches: must be >= 1 (leave it unset to evaluate every batch)")),
            Some(n) => i64::try_from(n).map_err(|_| invalid(format!("max_batches: {n} is too large")))?,
        };
        let mut out = out_struct!(sys::olm_eval_metrics);
        // SAFETY: the trainer is borrowed exclusively; data is live; out has struct_size set.
        check(unsafe { sys::olm_trainer_evaluate(self.ptr.as_ptr(), data.ptr.as_ptr(), max_batches, &mut out) })?;
        Ok(EvalMetrics::from(&out))
    }
}

// ------------------------------------------------------------------------------------------
// Data

/// Options for datasets; `new(sequence_length, vocab_size)` then the builder methods.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    sequence_length: i64,
    vocab_size: i64,
    eos_token_id: Option<i64>,
    masked_token_ids: Vec<i64>,
    raw_dtype: String,
}

impl DatasetOptions {
    /// Instances of `sequence_length` tokens, each token < `vocab_size`.
    pub fn new(sequence_length: i64, vocab_size: i64) -> Self {
        DatasetOptions { sequence_length, vocab_size, eos_token_id: None, masked_token_ids: Vec::new(), raw_dtype: "uint16".into() }
    }
    /// Documents end after this token (batches then carry document boundaries).
    pub fn eos_token_id(mut self, id: i64) -> Self {
        self.eos_token_id = Some(id);
        self
    }
    /// Tokens never used as targets (their label positions become -100).
    pub fn masked_token_ids(mut self, ids: &[i64]) -> Self {
        self.masked_token_ids = ids.to_vec();
        self
    }
    /// "uint16" (default) or "uint32" for raw (non-.npy) files.
    pub fn raw_dtype(mut self, dtype: &str) -> Self {
        self.raw_dtype = dtype.into();
        self
    }

    fn with_raw<T>(&self, f: impl FnOnce(&sys::olm_dataset_options) -> T) -> Result<T> {
        let mut raw = default_options!(sys::olm_dataset_options, sys::olm_dataset_options_init_sized);
        raw.sequence_length = self.sequence_length;
        raw.vocab_size = self.vocab_size;
        raw.eos_token_id = self.eos_token_id.unwrap_or(-1);
        if !self.masked_token_ids.is_empty() {
            raw.masked_token_ids = self.masked_token_ids.as_ptr();
            raw.num_masked_token_ids = self.masked_token_ids.len();
        }
        let dtype = cstring(&self.raw_dtype, "raw_dtype")?;
        raw.raw_dtype = dtype.as_ptr();
        // raw's pointers (into self and `dtype`) stay valid while f runs.
        Ok(f(&raw))
    }
}

handle!(
    /// A token stream cut into fixed-length instances. Immutable; `olm.h` documents datasets
    /// as safe to share between threads, so this handle is `Send` and `Sync`.
    Dataset,
    sys::olm_dataset,
    sys::olm_dataset_free
);
opaque_debug!(Dataset);

// SAFETY: olm.h: "A token dataset ... Immutable and safe to share between threads." Every
// operation on it (size, batch, reading it during fit or evaluate) only reads.
unsafe impl Sync for Dataset {}

/// A batch built from dataset instances.
#[derive(Debug)]
pub struct Batch {
    /// (B, sequence_length) int64 token ids.
    pub input_ids: Tensor,
    /// (B, sequence_length) int64: input_ids shifted left, -100 where nothing is predicted.
    pub labels: Tensor,
    /// Cumulative document lengths (int32); `None` without an EOS token.
    pub cu_doc_lens: Option<Tensor>,
    /// The longest document in the batch (0 without an EOS token).
    pub max_doc_len: i64,
}

impl Dataset {
    /// Copies host token ids into a dataset.
    pub fn from_tokens(tokens: &[i64], options: &DatasetOptions) -> Result<Dataset> {
        let mut out = ptr::null_mut();
        // SAFETY: tokens covers tokens.len() readable ids (copied during the call); raw is a
        // whole initialized options struct whose pointers are valid while the closure runs.
        check(options.with_raw(|raw| unsafe {
            sys::olm_dataset_from_tokens(nonnull_empty(tokens), tokens.len(), raw, &mut out)
        })?)?;
        Ok(Dataset::from_raw(out))
    }

    /// Memory-maps raw uint16/uint32 token files and .npy files as one stream.
    pub fn from_files<P: AsRef<Path>>(paths: &[P], options: &DatasetOptions) -> Result<Dataset> {
        let owned = paths.iter().map(|p| path_cstring(p.as_ref())).collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        let mut out = ptr::null_mut();
        // SAFETY: ptrs holds ptrs.len() NUL-terminated paths, owned by `owned`, alive for the
        // call; raw as in from_tokens.
        check(options.with_raw(|raw| unsafe {
            sys::olm_dataset_from_files(nonnull_empty(&ptrs), ptrs.len(), raw, &mut out)
        })?)?;
        Ok(Dataset::from_raw(out))
    }

    /// (tokens, instances).
    pub fn size(&self) -> Result<(i64, i64)> {
        let (mut tokens, mut instances) = (0i64, 0i64);
        // SAFETY: self.ptr is a live dataset; both out pointers are valid.
        check(unsafe { sys::olm_dataset_size(self.ptr.as_ptr(), &mut tokens, &mut instances) })?;
        Ok((tokens, instances))
    }

    /// A batch of the instances at `indices` (each in [0, instances)).
    pub fn batch(&self, indices: &[i64]) -> Result<Batch> {
        let mut b = out_struct!(sys::olm_batch);
        // SAFETY: indices covers indices.len() readable values; b has struct_size set and is
        // filled only on success, after which its tensors are ours (wrapped below).
        check(unsafe { sys::olm_dataset_batch(self.ptr.as_ptr(), nonnull_empty(indices), indices.len(), &mut b) })?;
        Ok(Batch {
            input_ids: Tensor::from_raw(b.input_ids),
            labels: Tensor::from_raw(b.labels),
            cu_doc_lens: Tensor::from_raw_opt(b.cu_doc_lens),
            max_doc_len: b.max_doc_len,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Distributed training

/// A process group backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DistBackend {
    /// nccl for a CUDA device, gloo otherwise.
    Auto,
    /// PyTorch's Gloo backend (CPU tensors).
    Gloo,
    /// NVIDIA's NCCL (CUDA tensors).
    Nccl,
}

/// Options for [`Dist::new`]. Unset fields (the default) come from the launcher's
/// environment: torchrun's RANK, WORLD_SIZE, ..., MASTER_ADDR, MASTER_PORT, or Slurm's.
#[derive(Clone, Debug)]
pub struct DistOptions {
    backend: DistBackend,
    device: Device,
    rank: i64,
    world_size: i64,
    local_rank: i64,
    local_world_size: i64,
    master_addr: Option<String>,
    master_port: i32,
    timeout_seconds: f64,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            backend: DistBackend::Auto,
            device: Device::Cpu,
            rank: -1,
            world_size: -1,
            local_rank: -1,
            local_world_size: -1,
            master_addr: None,
            master_port: 0,
            timeout_seconds: 300.0,
        }
    }
}

impl DistOptions {
    /// The backend (default [`DistBackend::Auto`]).
    pub fn backend(mut self, backend: DistBackend) -> Self {
        self.backend = backend;
        self
    }
    /// The training device (default CPU); picks the backend for [`DistBackend::Auto`].
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// This process's rank and the number of processes (default: from the environment).
    pub fn rank(mut self, rank: i64, world_size: i64) -> Self {
        self.rank = rank;
        self.world_size = world_size;
        self
    }
    /// The rank within this machine and the processes on it (default: from the
    /// environment, else rank and world size).
    pub fn local_rank(mut self, local_rank: i64, local_world_size: i64) -> Self {
        self.local_rank = local_rank;
        self.local_world_size = local_world_size;
        self
    }
    /// The rendezvous address (rank 0's TCPStore, or torchrun's agent).
    pub fn master(mut self, addr: &str, port: i32) -> Self {
        self.master_addr = Some(addr.into());
        self.master_port = port;
        self
    }
    /// A missing or dead rank fails every call after this long instead of hanging.
    pub fn timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = seconds;
        self
    }
}

/// Where a rank sits in its trainer's device mesh ([`Trainer::layout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainerLayout {
    /// Which of the global batch's `data_parallel_size` parts [`Trainer::step`] takes (the
    /// ranks of one tensor- or context-parallel group take the same); 0 of 1 alone.
    pub data_parallel_rank: i64,
    /// The number of parts: world size / (tensor x context parallel size).
    pub data_parallel_size: i64,
    /// This rank's place in its tensor-parallel group (0 of 1 without one).
    pub tensor_parallel_rank: i64,
    /// The tensor-parallel degree.
    pub tensor_parallel_size: i64,
    /// This rank's place in its context-parallel group (0 of 1 without one).
    pub context_parallel_rank: i64,
    /// The context-parallel degree.
    pub context_parallel_size: i64,
}

/// This process's place in a process group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistInfo {
    /// This process's rank.
    pub rank: i64,
    /// The number of processes.
    pub world_size: i64,
    /// The rank within this machine.
    pub local_rank: i64,
    /// The processes on this machine.
    pub local_world_size: i64,
    /// The backend in use (Gloo or Nccl).
    pub backend: DistBackend,
    /// Collectives this rank has issued so far.
    pub collectives: i64,
    /// Payload bytes this rank has all-reduced or broadcast so far.
    pub bytes: i64,
}

handle!(
    /// A c10d process group (Gloo on CPU, NCCL on CUDA); one per process. A [`Trainer`] given
    /// it with [`Trainer::set_dist`] borrows it until the trainer is dropped.
    Dist,
    sys::olm_dist,
    sys::olm_dist_free
);
opaque_debug!(Dist);

impl Dist {
    /// Joins the group: every rank calls this with the same world size and address.
    pub fn new(options: &DistOptions) -> Result<Dist> {
        let device = options.device.c_string();
        let addr = options.master_addr.as_deref().map(|a| cstring(a, "master_addr")).transpose()?;
        let mut o = default_options!(sys::olm_dist_options, sys::olm_dist_options_init_sized);
        o.backend = match options.backend {
            DistBackend::Auto => sys::OLM_DIST_AUTO,
            DistBackend::Gloo => sys::OLM_DIST_GLOO,
            DistBackend::Nccl => sys::OLM_DIST_NCCL,
        } as i32;
        o.device = device.as_ptr();
        o.rank = options.rank;
        o.world_size = options.world_size;
        o.local_rank = options.local_rank;
        o.local_world_size = options.local_world_size;
        o.master_addr = addr.as_ref().map_or(ptr::null(), |a| a.as_ptr());
        o.master_port = options.master_port;
        o.timeout_seconds = options.timeout_seconds;
        let mut out = ptr::null_mut();
        // SAFETY: o is a whole initialized options struct; its strings (`device`, `addr`)
        // live on this frame through the call; out is valid.
        check(unsafe { sys::olm_dist_create(&o, &mut out) })?;
        Ok(Dist::from_raw(out))
    }

    /// This process's rank, world size, backend and traffic counters.
    pub fn info(&self) -> Result<DistInfo> {
        let mut i = out_struct!(sys::olm_dist_info);
        // SAFETY: self.ptr is a live group; i has struct_size set.
        check(unsafe { sys::olm_dist_info_get(self.ptr.as_ptr(), &mut i) })?;
        Ok(DistInfo {
            rank: i.rank,
            world_size: i.world_size,
            local_rank: i.local_rank,
            local_world_size: i.local_world_size,
            backend: if i.backend as u32 == sys::OLM_DIST_NCCL { DistBackend::Nccl } else { DistBackend::Gloo },
            collectives: i.collectives,
            bytes: i.bytes,
        })
    }

    /// Waits for every rank.
    pub fn barrier(&mut self) -> Result<()> {
        // SAFETY: self.ptr is a live group, borrowed exclusively (no trainer holds it).
        check(unsafe { sys::olm_dist_barrier(self.ptr.as_ptr()) })
    }

    /// Sums a float32 or int64 CPU tensor over all ranks, in place.
    pub fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<()> {
        // SAFETY: the group and the tensor are live and borrowed exclusively.
        check(unsafe { sys::olm_dist_all_reduce_sum(self.ptr.as_ptr(), tensor.ptr.as_ptr()) })
    }

    /// A final barrier, then the connections close.
    pub fn shutdown(&mut self) -> Result<()> {
        // SAFETY: self.ptr is a live group, borrowed exclusively.
        check(unsafe { sys::olm_dist_shutdown(self.ptr.as_ptr()) })
    }
}

// ------------------------------------------------------------------------------------------
// Tokenizers (after the handle! macros, which the module uses)

mod tokenizer;
pub use tokenizer::{SpecialIds, Tokenizer};
