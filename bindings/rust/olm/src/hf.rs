//! Hugging Face model directories: config.json, safetensors shards and their index,
//! generation_config.json and tokenizer files, in ([`Model::from_hf_dir`],
//! [`Config::from_hf_dir`]) and out ([`Model::save_hf_dir`]).

use std::ffi::CString;
use std::path::Path;
use std::ptr;

use crate::{check, cstring, invalid, path_cstring, Config, Device, Dtype, Model, Result};
use olm_sys as sys;

/// Options for [`Model::from_hf_dir`] and [`Config::from_hf_dir`]; `Default` is config.json's
/// dtype on the CPU.
#[derive(Clone, Debug, Default)]
pub struct HfLoadOptions {
    dtype: Option<Dtype>,
    device: Option<Device>,
}

impl HfLoadOptions {
    /// The model's parameter dtype, float32 or bfloat16 (`None`: config.json's torch_dtype,
    /// float16 models loading as float32).
    pub fn dtype(mut self, dtype: Option<Dtype>) -> Self {
        self.dtype = dtype;
        self
    }
    /// The device (default the CPU).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }
}

/// Options for [`Model::save_hf_dir`]; `Default` is libolm's (5 GiB shards, the model's dtype,
/// no tokenizer files, unknown token ids).
#[derive(Clone, Debug)]
pub struct HfSaveOptions {
    max_shard_bytes: i64,
    tokenizer_source_dir: Option<String>,
    dtype: Option<Dtype>,
    bos_token_id: Option<i64>,
    eos_token_id: Option<i64>,
}

impl Default for HfSaveOptions {
    fn default() -> Self {
        let raw = default_options!(sys::olm_hf_save_options, sys::olm_hf_save_options_init_sized);
        HfSaveOptions {
            max_shard_bytes: raw.max_shard_bytes,
            tokenizer_source_dir: None,
            dtype: None,
            bos_token_id: None,
            eos_token_id: None,
        }
    }
}

impl HfSaveOptions {
    /// The largest weight file in bytes; more weights go into numbered shards and an index.
    pub fn max_shard_bytes(mut self, bytes: i64) -> Self {
        self.max_shard_bytes = bytes;
        self
    }
    /// A directory whose tokenizer files (tokenizer.json, tokenizer_config.json,
    /// special_tokens_map.json, tokenizer.model, ...) are copied along.
    pub fn tokenizer_source_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.tokenizer_source_dir = Some(dir.as_ref().to_string_lossy().into_owned());
        self
    }
    /// The files' dtype: float32, bfloat16 or float16 (`None`: the model's).
    pub fn dtype(mut self, dtype: Option<Dtype>) -> Self {
        self.dtype = dtype;
        self
    }
    /// bos/eos token ids for config.json and generation_config.json.
    pub fn token_ids(mut self, bos: Option<i64>, eos: Option<i64>) -> Self {
        self.bos_token_id = bos;
        self.eos_token_id = eos;
        self
    }
}

/// The C struct and the strings it points to, alive together for one call.
struct RawLoad {
    raw: sys::olm_hf_load_options,
    _device: Option<CString>,
}

fn raw_load(options: &HfLoadOptions) -> RawLoad {
    let mut raw = default_options!(sys::olm_hf_load_options, sys::olm_hf_load_options_init_sized);
    raw.dtype = options.dtype.map_or(-1, |d| d.raw());
    let device = options.device.map(|d| d.c_string());
    raw.device = device.as_ref().map_or(ptr::null(), |d| d.as_ptr());
    RawLoad { raw, _device: device }
}

impl Config {
    /// The olm config for a Hugging Face model directory's config.json (no weights read).
    /// Fields olm cannot express are refused, naming them (`ErrorCode::InvalidConfig`).
    pub fn from_hf_dir(dir: impl AsRef<Path>, options: &HfLoadOptions) -> Result<Config> {
        let dir = path_cstring(dir.as_ref())?;
        let load = raw_load(options);
        let mut out = ptr::null_mut();
        // SAFETY: dir is NUL-terminated; load.raw is a whole initialized struct whose device
        // pointer (if set) points into load, alive for the call; out is a valid out pointer.
        check(unsafe { sys::olm_config_from_hf_dir(dir.as_ptr(), &load.raw, &mut out) })?;
        Ok(Config::from_raw(out))
    }
}

impl Model {
    /// Loads a Hugging Face model directory (model.safetensors or the shards its index
    /// lists), checking every file against config.json and the index before copying any
    /// weight; errors name the file and the tensor or field.
    pub fn from_hf_dir(dir: impl AsRef<Path>, options: &HfLoadOptions) -> Result<Model> {
        let dir = path_cstring(dir.as_ref())?;
        let load = raw_load(options);
        let mut out = ptr::null_mut();
        // SAFETY: as in Config::from_hf_dir.
        check(unsafe { sys::olm_model_from_hf_dir(dir.as_ptr(), &load.raw, &mut out) })?;
        Ok(Model::from_raw(out))
    }

    /// Writes the model as a Hugging Face model directory that transformers loads; `dir`
    /// must not exist or be empty, and appears complete or not at all.
    pub fn save_hf_dir(&self, dir: impl AsRef<Path>, options: &HfSaveOptions) -> Result<()> {
        let dir = path_cstring(dir.as_ref())?;
        let tokenizer = options.tokenizer_source_dir.as_deref().map(|d| cstring(d, "tokenizer_source_dir")).transpose()?;
        let mut raw = default_options!(sys::olm_hf_save_options, sys::olm_hf_save_options_init_sized);
        if options.max_shard_bytes <= 0 {
            return Err(invalid(format!("max_shard_bytes must be positive (got {})", options.max_shard_bytes)));
        }
        raw.max_shard_bytes = options.max_shard_bytes;
        raw.tokenizer_source_dir = tokenizer.as_ref().map_or(ptr::null(), |t| t.as_ptr());
        raw.dtype = options.dtype.map_or(-1, |d| d.raw());
        raw.bos_token_id = options.bos_token_id.unwrap_or(-1);
        raw.eos_token_id = options.eos_token_id.unwrap_or(-1);
        // SAFETY: the model is live and borrowed; dir and the tokenizer path are
        // NUL-terminated and alive for the call; raw is a whole initialized struct.
        check(unsafe { sys::olm_model_save_hf_dir(self.ptr.as_ptr(), dir.as_ptr(), &raw) })
    }
}
