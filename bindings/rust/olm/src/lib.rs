//! Safe Rust API for libolm: build OLMo-2 and Llama transformer language models, run forward
//! and loss, train, checkpoint and sample from them, through libolm's C ABI.
//!
//! Every handle (`Config`, `Model`, `Tensor`, `TrainConfig`, `Trainer`, `Dataset`) owns its C
//! object and frees it on `Drop`. Handles are `Send` (libolm allows different handles on
//! different threads) but not `Sync` (one handle must not be used by two threads at once).
//! Every fallible call returns `Result<T, olm::Error>`.
//!
//! ```no_run
//! let config = olm::Config::from_preset("olmo2_1M", 256)?;
//! let model = olm::Model::new(&config, "cpu", &olm::ModelOptions::default())?;
//! let ids = olm::Tensor::from_i64(&[1, 2, 3, 4], &[1, 4])?;
//! let logits = model.forward(&ids, 0)?;
//! println!("{:?}", logits.shape()?);
//! # Ok::<(), olm::Error>(())
//! ```

use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};

use olm_sys as sys;

mod params;
pub use params::{num_threads, set_num_threads, DlPack};

// ------------------------------------------------------------------------------------------
// Errors

/// What kind of failure an [`Error`] is (libolm's `OLM_ERR_*` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidConfig,
    Parse,
    Io,
    OutOfMemory,
    DeviceUnavailable,
    Mismatch,
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

/// An error reported by libolm (or by this crate for arguments C cannot represent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "olm: {}", self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(err: *mut sys::olm_error) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-NULL error from libolm is valid until olm_error_free.
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

/// Copies and frees a library buffer.
fn take_buffer(buf: *mut sys::olm_buffer) -> Vec<u8> {
    // SAFETY: buf is a valid buffer returned by libolm, freed here exactly once.
    unsafe {
        let data = sys::olm_buffer_data(buf);
        let size = sys::olm_buffer_size(buf);
        let out = if size == 0 { Vec::new() } else { std::slice::from_raw_parts(data, size).to_vec() };
        sys::olm_buffer_free(buf);
        out
    }
}

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    // SAFETY: olm_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::olm_version()).to_string_lossy().into_owned() }
}

/// The number of CUDA devices this process can use (0 without a GPU).
pub fn cuda_device_count() -> i32 {
    // SAFETY: no arguments, no preconditions.
    unsafe { sys::olm_cuda_device_count() }
}

macro_rules! handle {
    ($name:ident, $raw:ty, $free:path) => {
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the pointer came from libolm and is freed exactly once.
                unsafe { $free(self.ptr.as_ptr()) }
            }
        }
        // SAFETY: libolm allows a handle to be used from any thread, one at a time; &mut/&
        // access through Rust's ownership rules plus !Sync keep it to one thread at a time.
        unsafe impl Send for $name {}
        impl $name {
            fn from_raw(ptr: *mut $raw) -> Self {
                $name { ptr: NonNull::new(ptr).expect("libolm returned NULL on success"), _not_sync: PhantomData }
            }
        }
    };
}

/// Marker that keeps handles !Sync (raw pointers would also make them !Send).
type NotSync = PhantomData<std::cell::Cell<()>>;

// ------------------------------------------------------------------------------------------
// Configs

/// A validated model configuration (schema/olm.fbs `TransformerConfig`).
pub struct Config {
    ptr: NonNull<sys::olm_config>,
    _not_sync: NotSync,
}
handle!(Config, sys::olm_config, sys::olm_config_free);

impl Config {
    /// One of OLMo-core's presets, e.g. "olmo2_30M" or "llama3_8B".
    pub fn from_preset(name: &str, vocab_size: i64) -> Result<Config> {
        let name = cstring(name, "name")?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_config_from_preset(name.as_ptr(), vocab_size, &mut out) })?;
        Ok(Config::from_raw(out))
    }

    /// Parses and validates a JSON configuration.
    pub fn from_json(text: &str) -> Result<Config> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_config_from_json(text.as_ptr() as *const c_char, text.len(), &mut out) })?;
        Ok(Config::from_raw(out))
    }

    /// Verifies and validates a binary configuration (identifier "OLMC").
    pub fn from_flatbuffer(data: &[u8]) -> Result<Config> {
        let mut out = ptr::null_mut();
        let p = if data.is_empty() { [0u8].as_ptr() } else { data.as_ptr() };
        check(unsafe { sys::olm_config_from_flatbuffer(p as *const c_void, data.len(), &mut out) })?;
        Ok(Config::from_raw(out))
    }

    pub fn to_json(&self) -> Result<String> {
        let mut buf = ptr::null_mut();
        check(unsafe { sys::olm_config_to_json(self.ptr.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    pub fn to_flatbuffer(&self) -> Result<Vec<u8>> {
        let mut buf = ptr::null_mut();
        check(unsafe { sys::olm_config_to_flatbuffer(self.ptr.as_ptr(), &mut buf) })?;
        Ok(take_buffer(buf))
    }

    /// (total, non-embedding) parameters, counted as OLMo-core counts them.
    pub fn num_params(&self) -> Result<(i64, i64)> {
        let (mut total, mut non_embedding) = (0i64, 0i64);
        check(unsafe { sys::olm_config_num_params(self.ptr.as_ptr(), &mut total, &mut non_embedding) })?;
        Ok((total, non_embedding))
    }

    /// (active, active non-embedding) parameters: an MoE block counts top_k of its experts,
    /// as OLMo-core's num_active_params does; equal to [`Config::num_params`] for dense models.
    pub fn num_active_params(&self) -> Result<(i64, i64)> {
        let (mut active, mut active_non_embedding) = (0i64, 0i64);
        check(unsafe {
            sys::olm_config_num_active_params(self.ptr.as_ptr(), &mut active, &mut active_non_embedding)
        })?;
        Ok((active, active_non_embedding))
    }

    /// OLMo-core's idealized training FLOPs per token at a sequence length.
    pub fn num_flops_per_token(&self, seq_len: i64) -> Result<i64> {
        let mut flops = 0i64;
        check(unsafe { sys::olm_config_num_flops_per_token(self.ptr.as_ptr(), seq_len, &mut flops) })?;
        Ok(flops)
    }
}

// ------------------------------------------------------------------------------------------
// Tensors

/// Tensor element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Int32,
    Int64,
    Float32,
    BFloat16,
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

/// A dense tensor owned by libolm (host or device).
pub struct Tensor {
    ptr: NonNull<sys::olm_tensor>,
    _not_sync: NotSync,
}
handle!(Tensor, sys::olm_tensor, sys::olm_tensor_free);

impl Tensor {
    fn from_raw_opt(ptr: *mut sys::olm_tensor) -> Option<Tensor> {
        NonNull::new(ptr).map(|ptr| Tensor { ptr, _not_sync: PhantomData })
    }

    fn create<T>(dtype: Dtype, data: &[T], shape: &[i64]) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        let bytes = std::mem::size_of_val(data);
        let p = if data.is_empty() { ptr::null() } else { data.as_ptr() as *const c_void };
        let s = if shape.is_empty() { ptr::null() } else { shape.as_ptr() };
        check(unsafe { sys::olm_tensor_create(dtype.raw(), s, shape.len(), p, bytes, &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// Copies `data` (row-major) into a new int64 tensor of `shape`.
    pub fn from_i64(data: &[i64], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(Dtype::Int64, data, shape)
    }
    pub fn from_i32(data: &[i32], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(Dtype::Int32, data, shape)
    }
    pub fn from_f32(data: &[f32], shape: &[i64]) -> Result<Tensor> {
        Tensor::create(Dtype::Float32, data, shape)
    }

    pub fn dtype(&self) -> Result<Dtype> {
        let mut raw: sys::olm_dtype = 0;
        check(unsafe { sys::olm_tensor_dtype(self.ptr.as_ptr(), &mut raw) })?;
        Dtype::from_raw(raw)
    }

    pub fn shape(&self) -> Result<Vec<i64>> {
        let mut ndim = 0usize;
        check(unsafe { sys::olm_tensor_ndim(self.ptr.as_ptr(), &mut ndim) })?;
        let mut shape = vec![0i64; ndim.max(1)];
        check(unsafe { sys::olm_tensor_shape(self.ptr.as_ptr(), shape.as_mut_ptr(), ndim) })?;
        shape.truncate(ndim);
        Ok(shape)
    }

    fn to_vec<T: Default + Clone>(&self, want: Dtype) -> Result<Vec<T>> {
        let have = self.dtype()?;
        if have != want {
            return Err(invalid(format!("tensor: dtype is {have:?}, not {want:?}")));
        }
        let mut nbytes = 0usize;
        check(unsafe { sys::olm_tensor_nbytes(self.ptr.as_ptr(), &mut nbytes) })?;
        let mut out = vec![T::default(); nbytes / std::mem::size_of::<T>()];
        check(unsafe { sys::olm_tensor_copy_to_host(self.ptr.as_ptr(), out.as_mut_ptr() as *mut c_void, nbytes) })?;
        Ok(out)
    }

    /// The elements of a float32 tensor, row-major.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_vec(Dtype::Float32)
    }
    pub fn to_vec_i64(&self) -> Result<Vec<i64>> {
        self.to_vec(Dtype::Int64)
    }
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        self.to_vec(Dtype::Int32)
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
        let mut raw: sys::olm_model_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_model_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
        ModelOptions { raw }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
    None,
}

/// Options for [`Model::forward_with`]; `Default` is libolm's (all logits, no documents).
/// The lifetime ties the options to the `cu_doc_lens` tensor they borrow.
#[derive(Clone, Debug)]
pub struct ForwardOptions<'a> {
    raw: sys::olm_forward_options,
    _documents: std::marker::PhantomData<&'a Tensor>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        let mut raw: sys::olm_forward_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_forward_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
        ForwardOptions { raw, _documents: std::marker::PhantomData }
    }
}

impl<'a> ForwardOptions<'a> {
    /// Keep only the logits of the last `n` positions; 0 keeps all.
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
    _documents: std::marker::PhantomData<&'a Tensor>,
}

impl Default for LossOptions<'_> {
    fn default() -> Self {
        let mut raw: sys::olm_loss_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_loss_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
        LossOptions { raw, _documents: std::marker::PhantomData }
    }
}

impl<'a> LossOptions<'a> {
    /// Intra-document masking, as [`ForwardOptions::documents`].
    pub fn documents(mut self, cu_doc_lens: &'a Tensor, max_doc_len: i64) -> Self {
        self.raw.cu_doc_lens = cu_doc_lens.ptr.as_ptr();
        self.raw.max_doc_len = max_doc_len;
        self
    }
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.raw.ignore_index = index;
        self
    }
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.raw.loss_reduction = (match reduction {
            Reduction::Mean => sys::OLM_LOSS_REDUCTION_MEAN,
            Reduction::Sum => sys::OLM_LOSS_REDUCTION_SUM,
            Reduction::None => sys::OLM_LOSS_REDUCTION_NONE,
        }) as sys::olm_loss_reduction;
        self
    }
    /// 0 disables the z-loss.
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
    pub fn return_logits(mut self, yes: bool) -> Self {
        self.raw.return_logits = yes as i32;
        self
    }
    pub fn logits_to_keep(mut self, n: i64) -> Self {
        self.raw.logits_to_keep = n;
        self
    }
}

/// The losses of [`Model::loss`].
pub struct LossOutput {
    pub loss: Tensor,
    pub ce_loss: Tensor,
    pub z_loss: Option<Tensor>,
    pub logits: Option<Tensor>,
    /// The losses as numbers for mean and sum reductions (0 for none).
    pub loss_value: f64,
    pub ce_loss_value: f64,
    pub z_loss_value: f64,
    /// MoE models: the routers' weighted load-balancing loss and router z-loss (summed over
    /// blocks, not part of `loss`); `None` and 0 for dense models.
    pub lb_loss: Option<Tensor>,
    pub router_z_loss: Option<Tensor>,
    pub lb_loss_value: f64,
    pub router_z_loss_value: f64,
}

/// A parameter tensor's description (OLMo-core state-dict name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterInfo {
    pub name: String,
    pub dtype: Dtype,
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
        let mut raw: sys::olm_generate_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_generate_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
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
    pub fn max_new_tokens(mut self, n: i64) -> Self {
        self.max_new_tokens = n;
        self
    }
    /// 0 is greedy decoding.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    pub fn top_k(mut self, k: i64) -> Self {
        self.top_k = k;
        self
    }
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = p;
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn stop_tokens(mut self, tokens: &[i64]) -> Self {
        self.stop_tokens = tokens.to_vec();
        self
    }
    pub fn use_kv_cache(mut self, yes: bool) -> Self {
        self.use_kv_cache = yes;
        self
    }
}

/// A transformer language model.
pub struct Model {
    ptr: NonNull<sys::olm_model>,
    _not_sync: NotSync,
}
handle!(Model, sys::olm_model, sys::olm_model_free);

/// State shared with a C callback: the Rust closure and a panic caught inside it.
struct CallbackState<'a, F: ?Sized> {
    callback: &'a mut F,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn token_trampoline(token: i64, user_data: *mut c_void) -> i32 {
    // SAFETY: user_data is the CallbackState that Model::generate passed for this call.
    let state = &mut *(user_data as *mut CallbackState<dyn FnMut(i64) -> bool>);
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
    /// Builds a model on "cpu", "cuda" or "cuda:N".
    pub fn new(config: &Config, device: &str, options: &ModelOptions) -> Result<Model> {
        let device = cstring(device, "device")?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_model_create(config.ptr.as_ptr(), device.as_ptr(), &options.raw, &mut out) })?;
        Ok(Model::from_raw(out))
    }

    /// float32 logits (batch, positions, vocab) for int32/int64 ids (batch, seq); a non-zero
    /// `logits_to_keep` keeps only the last positions.
    pub fn forward(&self, input_ids: &Tensor, logits_to_keep: i64) -> Result<Tensor> {
        let mut opts: sys::olm_forward_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_forward_options_init_sized(&mut opts, std::mem::size_of_val(&opts)) };
        opts.logits_to_keep = logits_to_keep;
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_model_forward(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), &opts, &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// float32 logits with [`ForwardOptions`] (logits to keep, intra-document masking).
    pub fn forward_with(&self, input_ids: &Tensor, options: &ForwardOptions) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_model_forward(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), &options.raw, &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// Cross-entropy (+ z-loss) against labels (not shifted; -100 by default is ignored).
    pub fn loss(&self, input_ids: &Tensor, labels: &Tensor, options: &LossOptions) -> Result<LossOutput> {
        let mut res: sys::olm_loss_result = unsafe { std::mem::zeroed() };
        res.struct_size = std::mem::size_of::<sys::olm_loss_result>();
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

    pub fn num_params(&self) -> Result<i64> {
        let mut n = 0i64;
        check(unsafe { sys::olm_model_num_params(self.ptr.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// Renormalizes an nGPT model's embeddings and matrices to unit norm (the trainer does
    /// this after every step); an error for models whose config name is not "normalized".
    pub fn normalize_matrices(&mut self) -> Result<()> {
        check(unsafe { sys::olm_model_normalize_matrices(self.ptr.as_ptr()) })
    }

    /// The parameters in state-dict order.
    pub fn parameters(&self) -> Result<Vec<ParameterInfo>> {
        let mut count = 0usize;
        check(unsafe { sys::olm_model_parameter_count(self.ptr.as_ptr(), &mut count) })?;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let mut info: sys::olm_parameter_info = unsafe { std::mem::zeroed() };
            info.struct_size = std::mem::size_of::<sys::olm_parameter_info>();
            check(unsafe { sys::olm_model_parameter_info(self.ptr.as_ptr(), i, &mut info) })?;
            // SAFETY: name and shape are borrowed from the model, alive while self is.
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
        check(unsafe { sys::olm_model_load_safetensors(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Writes the weights atomically with OLMo-core names.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        check(unsafe { sys::olm_model_save_safetensors(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Samples tokens after `prompt` ((T,) or (1, T)). `on_token`, when given, sees each token
    /// as it is produced and stops generation by returning false. A panic inside it stops
    /// generation and is resumed here after libolm returns.
    pub fn generate(
        &self,
        prompt: &Tensor,
        options: &GenerateOptions,
        on_token: Option<&mut dyn FnMut(i64) -> bool>,
    ) -> Result<Vec<i64>> {
        let mut raw: sys::olm_generate_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_generate_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
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

/// A validated training configuration (schema/olm.fbs `TrainConfig`).
pub struct TrainConfig {
    ptr: NonNull<sys::olm_train_config>,
    _not_sync: NotSync,
}
handle!(TrainConfig, sys::olm_train_config, sys::olm_train_config_free);

impl TrainConfig {
    pub fn from_json(text: &str) -> Result<TrainConfig> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_train_config_from_json(text.as_ptr() as *const c_char, text.len(), &mut out) })?;
        Ok(TrainConfig::from_raw(out))
    }

    /// Verifies a binary training configuration (identifier "OLMT").
    pub fn from_flatbuffer(data: &[u8]) -> Result<TrainConfig> {
        let mut out = ptr::null_mut();
        let p = if data.is_empty() { [0u8].as_ptr() } else { data.as_ptr() };
        check(unsafe { sys::olm_train_config_from_flatbuffer(p as *const c_void, data.len(), &mut out) })?;
        Ok(TrainConfig::from_raw(out))
    }

    pub fn to_json(&self) -> Result<String> {
        let mut buf = ptr::null_mut();
        check(unsafe { sys::olm_train_config_to_json(self.ptr.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    pub fn to_flatbuffer(&self) -> Result<Vec<u8>> {
        let mut buf = ptr::null_mut();
        check(unsafe { sys::olm_train_config_to_flatbuffer(self.ptr.as_ptr(), &mut buf) })?;
        Ok(take_buffer(buf))
    }

    /// The model configuration it names (`model` or `model_preset`).
    pub fn model(&self) -> Result<Config> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_train_config_model(self.ptr.as_ptr(), &mut out) })?;
        Ok(Config::from_raw(out))
    }
}

/// The metrics of one optimizer step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepMetrics {
    pub step: i64,
    pub loss: f64,
    pub ce_loss: f64,
    pub z_loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub tokens: i64,
    pub tokens_seen: i64,
    pub tokens_per_second: f64,
    pub step_seconds: f64,
    pub skipped: bool,
    pub skipped_steps: i64,
    /// MoE models: the routers' weighted load-balancing and z-losses over the batch (in the
    /// gradient, not in `loss`); 0 for dense models.
    pub lb_loss: f64,
    pub router_z_loss: f64,
    /// Bytes this rank all-reduced during the step (0 without a process group).
    pub comm_bytes: i64,
    /// Seconds waited for the gradient reduction after backward.
    pub comm_wait_seconds: f64,
}

impl From<&sys::olm_step_metrics> for StepMetrics {
    fn from(m: &sys::olm_step_metrics) -> Self {
        StepMetrics {
            step: m.step,
            loss: m.loss,
            ce_loss: m.ce_loss,
            z_loss: m.z_loss,
            grad_norm: m.grad_norm,
            lr: m.lr,
            tokens: m.tokens,
            tokens_seen: m.tokens_seen,
            tokens_per_second: m.tokens_per_second,
            step_seconds: m.step_seconds,
            skipped: m.skipped != 0,
            skipped_steps: m.skipped_steps,
            lb_loss: m.lb_loss,
            router_z_loss: m.router_z_loss,
            comm_bytes: m.comm_bytes,
            comm_wait_seconds: m.comm_wait_seconds,
        }
    }
}

/// A validation loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalMetrics {
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: i64,
}

impl From<&sys::olm_eval_metrics> for EvalMetrics {
    fn from(m: &sys::olm_eval_metrics) -> Self {
        EvalMetrics { loss: m.loss, perplexity: m.perplexity, tokens: m.tokens }
    }
}

/// Trains a model in place (libolm keeps the model alive while the trainer lives).
pub struct Trainer {
    ptr: NonNull<sys::olm_trainer>,
    _not_sync: NotSync,
}
handle!(Trainer, sys::olm_trainer, sys::olm_trainer_free);

/// Callbacks for [`Trainer::fit`].
#[derive(Default)]
pub struct FitCallbacks<'a> {
    /// Sees each step's metrics; returning false stops training cleanly.
    pub on_step: Option<&'a mut dyn FnMut(&StepMetrics) -> bool>,
    pub on_log: Option<&'a mut dyn FnMut(&str)>,
}

struct FitState<'a, 'b> {
    callbacks: &'b mut FitCallbacks<'a>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn step_trampoline(m: *const sys::olm_step_metrics, user_data: *mut c_void) -> i32 {
    // SAFETY: user_data is the FitState that Trainer::fit passed for this call.
    let state = &mut *(user_data as *mut FitState);
    if state.panic.is_some() {
        return 1;
    }
    let metrics = StepMetrics::from(&*m);
    let Some(cb) = state.callbacks.on_step.as_mut() else { return 0 };
    match catch_unwind(AssertUnwindSafe(|| cb(&metrics))) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(panic) => {
            state.panic = Some(panic);
            1
        }
    }
}

unsafe extern "C" fn log_trampoline(message: *const c_char, user_data: *mut c_void) {
    // SAFETY: as above; message is a NUL-terminated string valid for the call.
    let state = &mut *(user_data as *mut FitState);
    if state.panic.is_some() {
        return;
    }
    let text = CStr::from_ptr(message).to_string_lossy().into_owned();
    if let Some(cb) = state.callbacks.on_log.as_mut() {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| cb(&text))) {
            state.panic = Some(panic);
        }
    }
}

impl Trainer {
    pub fn new(model: &mut Model, config: &TrainConfig) -> Result<Trainer> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_trainer_create(model.ptr.as_ptr(), config.ptr.as_ptr(), &mut out) })?;
        Ok(Trainer::from_raw(out))
    }

    /// One optimizer step; `labels: None` uses OLMo-core's shifted labels.
    pub fn step(&mut self, input_ids: &Tensor, labels: Option<&Tensor>) -> Result<StepMetrics> {
        let mut m: sys::olm_step_metrics = unsafe { std::mem::zeroed() };
        m.struct_size = std::mem::size_of::<sys::olm_step_metrics>();
        let l = labels.map_or(ptr::null(), |t| t.ptr.as_ptr() as *const _);
        check(unsafe { sys::olm_trainer_step(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), l, &mut m) })?;
        Ok(StepMetrics::from(&m))
    }

    /// One optimizer step with intra-document masking: `cu_doc_lens` as in
    /// [`ForwardOptions::documents`] (a [`Batch`]'s qualifies).
    pub fn step_documents(&mut self, input_ids: &Tensor, labels: Option<&Tensor>, cu_doc_lens: &Tensor) -> Result<StepMetrics> {
        let mut m: sys::olm_step_metrics = unsafe { std::mem::zeroed() };
        m.struct_size = std::mem::size_of::<sys::olm_step_metrics>();
        let l = labels.map_or(ptr::null(), |t| t.ptr.as_ptr() as *const _);
        check(unsafe {
            sys::olm_trainer_step_documents(self.ptr.as_ptr(), input_ids.ptr.as_ptr(), l, cu_doc_lens.ptr.as_ptr(), &mut m)
        })?;
        Ok(StepMetrics::from(&m))
    }

    /// Trains data-parallel over a process group (every rank calls this; rank 0's weights are
    /// broadcast). Afterwards [`Trainer::step`] takes this rank's part of the global batch and
    /// [`Trainer::fit`] gives each rank its slice. `None` detaches. The trainer keeps the group
    /// alive.
    pub fn set_dist(&mut self, dist: Option<&Dist>) -> Result<()> {
        let d = dist.map_or(ptr::null_mut(), |d| d.ptr.as_ptr());
        check(unsafe { sys::olm_trainer_set_dist(self.ptr.as_ptr(), d) })
    }

    /// Writes `<folder>/step<N>` atomically; returns its path. With a process group
    /// ([`Trainer::set_dist`]) a collective that every rank calls: each rank writes its shard
    /// (`rank<r>.safetensors`) and the checkpoint appears once all have finished.
    pub fn save_checkpoint(&mut self, folder: impl AsRef<Path>) -> Result<String> {
        let folder = path_cstring(folder.as_ref())?;
        let mut buf = ptr::null_mut();
        check(unsafe { sys::olm_trainer_save_checkpoint(self.ptr.as_ptr(), folder.as_ptr(), &mut buf) })?;
        Ok(String::from_utf8_lossy(&take_buffer(buf)).into_owned())
    }

    /// Restores a checkpoint directory, or a save folder's newest checkpoint, single-process
    /// or sharded (at any world size).
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        check(unsafe { sys::olm_trainer_load_checkpoint(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Trains until the config's max_steps; returns the last evaluation (default when none).
    pub fn fit(&mut self, data: &Dataset, eval_data: Option<&Dataset>, callbacks: FitCallbacks) -> Result<EvalMetrics> {
        self.fit_with_documents(data, eval_data, callbacks, None)
    }

    /// Trains until the config's max_steps on the train config's `data` section, evaluating
    /// `eval_data` (or, when `None`, the config's `eval_data` section): the run `olm train`
    /// makes from the same JSON. To stop on SIGTERM or SIGINT with a checkpoint, as `olm
    /// train` does, have `on_step` return `false` once a signal flag is set.
    pub fn fit_from_config(&mut self, eval_data: Option<&Dataset>, callbacks: FitCallbacks) -> Result<EvalMetrics> {
        self.fit_data(None, eval_data, callbacks, None)
    }

    /// [`Trainer::fit`] with intra-document masking from the datasets' document boundaries
    /// switched on or off for training and evaluation; `None` follows the train config
    /// (`data.generate_doc_lengths`, `eval_data.generate_doc_lengths`).
    pub fn fit_with_documents(
        &mut self,
        data: &Dataset,
        eval_data: Option<&Dataset>,
        callbacks: FitCallbacks,
        document_masking: Option<bool>,
    ) -> Result<EvalMetrics> {
        self.fit_data(Some(data), eval_data, callbacks, document_masking)
    }

    fn fit_data(
        &mut self,
        data: Option<&Dataset>,
        eval_data: Option<&Dataset>,
        callbacks: FitCallbacks,
        document_masking: Option<bool>,
    ) -> Result<EvalMetrics> {
        let mut callbacks = callbacks;
        let mut opts: sys::olm_fit_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_fit_options_init_sized(&mut opts, std::mem::size_of_val(&opts)) };
        if let Some(masking) = document_masking {
            opts.document_masking = masking as i32;
        }
        if let Some(e) = eval_data {
            opts.eval_data = e.ptr.as_ptr();
        }
        let mut state = FitState { callbacks: &mut callbacks, panic: None };
        opts.on_step = Some(step_trampoline);
        opts.on_log = Some(log_trampoline);
        opts.user_data = &mut state as *mut FitState as *mut c_void;
        let mut out: sys::olm_eval_metrics = unsafe { std::mem::zeroed() };
        out.struct_size = std::mem::size_of::<sys::olm_eval_metrics>();
        let d = data.map_or(ptr::null(), |d| d.ptr.as_ptr() as *const _);
        let result = check(unsafe { sys::olm_trainer_fit(self.ptr.as_ptr(), d, &opts, &mut out) });
        if let Some(panic) = state.panic.take() {
            std::panic::resume_unwind(panic);
        }
        result?;
        Ok(EvalMetrics::from(&out))
    }

    /// Mean loss over a dataset's instances (max_batches 0: all).
    pub fn evaluate(&mut self, data: &Dataset, max_batches: i64) -> Result<EvalMetrics> {
        let mut out: sys::olm_eval_metrics = unsafe { std::mem::zeroed() };
        out.struct_size = std::mem::size_of::<sys::olm_eval_metrics>();
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
    pub fn new(sequence_length: i64, vocab_size: i64) -> Self {
        DatasetOptions { sequence_length, vocab_size, eos_token_id: None, masked_token_ids: Vec::new(), raw_dtype: "uint16".into() }
    }
    pub fn eos_token_id(mut self, id: i64) -> Self {
        self.eos_token_id = Some(id);
        self
    }
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
        let mut raw: sys::olm_dataset_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_dataset_options_init_sized(&mut raw, std::mem::size_of_val(&raw)) };
        raw.sequence_length = self.sequence_length;
        raw.vocab_size = self.vocab_size;
        raw.eos_token_id = self.eos_token_id.unwrap_or(-1);
        if !self.masked_token_ids.is_empty() {
            raw.masked_token_ids = self.masked_token_ids.as_ptr();
            raw.num_masked_token_ids = self.masked_token_ids.len();
        }
        let dtype = cstring(&self.raw_dtype, "raw_dtype")?;
        raw.raw_dtype = dtype.as_ptr();
        Ok(f(&raw))
    }
}

/// A token stream cut into fixed-length instances.
pub struct Dataset {
    ptr: NonNull<sys::olm_dataset>,
    _not_sync: NotSync,
}
handle!(Dataset, sys::olm_dataset, sys::olm_dataset_free);

/// A batch built from dataset instances.
pub struct Batch {
    pub input_ids: Tensor,
    pub labels: Tensor,
    /// Cumulative document lengths (int32); `None` without an EOS token.
    pub cu_doc_lens: Option<Tensor>,
    pub max_doc_len: i64,
}

impl Dataset {
    /// Copies host token ids into a dataset.
    pub fn from_tokens(tokens: &[i64], options: &DatasetOptions) -> Result<Dataset> {
        let mut out = ptr::null_mut();
        let p = if tokens.is_empty() { [0i64].as_ptr() } else { tokens.as_ptr() };
        check(options.with_raw(|raw| unsafe { sys::olm_dataset_from_tokens(p, tokens.len(), raw, &mut out) })?)?;
        Ok(Dataset::from_raw(out))
    }

    /// Memory-maps raw uint16/uint32 token files and .npy files as one stream.
    pub fn from_files<P: AsRef<Path>>(paths: &[P], options: &DatasetOptions) -> Result<Dataset> {
        let owned = paths.iter().map(|p| path_cstring(p.as_ref())).collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        let mut out = ptr::null_mut();
        let p = if ptrs.is_empty() { [ptr::null()].as_ptr() } else { ptrs.as_ptr() };
        check(options.with_raw(|raw| unsafe { sys::olm_dataset_from_files(p, ptrs.len(), raw, &mut out) })?)?;
        Ok(Dataset::from_raw(out))
    }

    /// (tokens, instances).
    pub fn size(&self) -> Result<(i64, i64)> {
        let (mut tokens, mut instances) = (0i64, 0i64);
        check(unsafe { sys::olm_dataset_size(self.ptr.as_ptr(), &mut tokens, &mut instances) })?;
        Ok((tokens, instances))
    }

    pub fn batch(&self, indices: &[i64]) -> Result<Batch> {
        let mut b: sys::olm_batch = unsafe { std::mem::zeroed() };
        b.struct_size = std::mem::size_of::<sys::olm_batch>();
        let p = if indices.is_empty() { [0i64].as_ptr() } else { indices.as_ptr() };
        check(unsafe { sys::olm_dataset_batch(self.ptr.as_ptr(), p, indices.len(), &mut b) })?;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistBackend {
    /// nccl for a CUDA device, gloo otherwise.
    Auto,
    Gloo,
    Nccl,
}

/// Options for [`Dist::new`]. Unset fields (the default) come from the launcher's
/// environment: torchrun's RANK, WORLD_SIZE, ..., MASTER_ADDR, MASTER_PORT, or Slurm's.
#[derive(Clone, Debug)]
pub struct DistOptions {
    backend: DistBackend,
    device: String,
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
            device: "cpu".into(),
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
    pub fn backend(mut self, backend: DistBackend) -> Self {
        self.backend = backend;
        self
    }
    /// The training device ("cpu", "cuda:N"); picks the backend for [`DistBackend::Auto`].
    pub fn device(mut self, device: &str) -> Self {
        self.device = device.into();
        self
    }
    pub fn rank(mut self, rank: i64, world_size: i64) -> Self {
        self.rank = rank;
        self.world_size = world_size;
        self
    }
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

/// This process's place in a process group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistInfo {
    pub rank: i64,
    pub world_size: i64,
    pub local_rank: i64,
    pub local_world_size: i64,
    pub backend: DistBackend,
    pub collectives: i64,
    pub bytes: i64,
}

/// A c10d process group (Gloo on CPU, NCCL on CUDA); one per process.
pub struct Dist {
    ptr: NonNull<sys::olm_dist>,
    _not_sync: NotSync,
}
handle!(Dist, sys::olm_dist, sys::olm_dist_free);

impl Dist {
    /// Joins the group: every rank calls this with the same world size and address.
    pub fn new(options: &DistOptions) -> Result<Dist> {
        let device = cstring(&options.device, "device")?;
        let addr = options.master_addr.as_deref().map(|a| cstring(a, "master_addr")).transpose()?;
        let mut o: sys::olm_dist_options = unsafe { std::mem::zeroed() };
        unsafe { sys::olm_dist_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
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
        check(unsafe { sys::olm_dist_create(&o, &mut out) })?;
        Ok(Dist::from_raw(out))
    }

    pub fn info(&self) -> Result<DistInfo> {
        let mut i: sys::olm_dist_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of::<sys::olm_dist_info>();
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
        check(unsafe { sys::olm_dist_barrier(self.ptr.as_ptr()) })
    }

    /// Sums a float32 or int64 CPU tensor over all ranks, in place.
    pub fn all_reduce_sum(&mut self, tensor: &mut Tensor) -> Result<()> {
        check(unsafe { sys::olm_dist_all_reduce_sum(self.ptr.as_ptr(), tensor.ptr.as_ptr()) })
    }

    /// A final barrier, then the connections close.
    pub fn shutdown(&mut self) -> Result<()> {
        check(unsafe { sys::olm_dist_shutdown(self.ptr.as_ptr()) })
    }
}
