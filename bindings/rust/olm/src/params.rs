//! Parameters by name, DLPack exchange and the library's CPU thread count.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use crate::{check, cstring, Model, Result, Tensor};
use olm_sys as sys;

// The DLPack C ABI's DLManagedTensor (dlpack.h), as far as this crate reads it. olm.h passes it
// as void* so that neither it nor this crate needs dlpack.h.
#[repr(C)]
struct DlManagedTensorRaw {
    data: *mut c_void,
    device_type: i32,
    device_id: i32,
    ndim: i32,
    code: u8,
    bits: u8,
    lanes: u16,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensorRaw)>,
}

/// An owned DLPack `DLManagedTensor*` sharing a tensor's memory without a copy: the currency
/// of zero-copy exchange with PyTorch (`torch.from_dlpack`), NumPy, JAX and others. Dropping it
/// calls its deleter; [`DlPack::into_raw`] hands it to a consumer that will.
#[derive(Debug)]
pub struct DlPack {
    ptr: NonNull<DlManagedTensorRaw>,
}

// SAFETY: DLPack allows the deleter to be called from any thread; the struct is not shared.
unsafe impl Send for DlPack {}

impl DlPack {
    /// Takes ownership of a `DLManagedTensor*` another framework produced.
    ///
    /// # Safety
    /// `ptr` must point to a valid DLPack `DLManagedTensor` that nobody else will delete.
    pub unsafe fn from_raw(ptr: *mut c_void) -> Option<DlPack> {
        NonNull::new(ptr as *mut DlManagedTensorRaw).map(|ptr| DlPack { ptr })
    }

    /// Gives up ownership: the consumer of the returned `DLManagedTensor*` calls its deleter.
    pub fn into_raw(self) -> *mut c_void {
        let p = self.ptr.as_ptr() as *mut c_void;
        std::mem::forget(self);
        p
    }

    /// The `DLManagedTensor*`, still owned by `self`.
    pub fn as_ptr(&self) -> *mut c_void {
        self.ptr.as_ptr() as *mut c_void
    }

    /// The tensor's data pointer (host or device memory).
    pub fn data_ptr(&self) -> *mut c_void {
        // SAFETY: self owns a valid DLManagedTensor.
        unsafe { (*self.ptr.as_ptr()).data }
    }

    /// The tensor's shape.
    pub fn shape(&self) -> Vec<i64> {
        // SAFETY: shape holds ndim sizes while the DLManagedTensor lives.
        unsafe {
            let raw = &*self.ptr.as_ptr();
            if raw.ndim <= 0 || raw.shape.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(raw.shape, raw.ndim as usize).to_vec()
            }
        }
    }
}

impl Drop for DlPack {
    fn drop(&mut self) {
        // SAFETY: self owns the DLManagedTensor; its deleter is called exactly once, here.
        unsafe {
            if let Some(deleter) = (*self.ptr.as_ptr()).deleter {
                deleter(self.ptr.as_ptr());
            }
        }
    }
}

impl Tensor {
    /// Exports the tensor through DLPack without copying. The result shares the tensor's memory
    /// (writes through either show in both) and keeps it alive after the tensor is dropped.
    pub fn to_dlpack(&self) -> Result<DlPack> {
        let mut out: *mut c_void = ptr::null_mut();
        check(unsafe { sys::olm_tensor_to_dlpack(self.ptr.as_ptr(), &mut out) })?;
        Ok(DlPack { ptr: NonNull::new(out as *mut DlManagedTensorRaw).expect("libolm returned NULL on success") })
    }

    /// Imports a DLPack tensor without copying (int32, int64, float32, float16 or bfloat16 on
    /// the CPU or a CUDA device). On success the tensor owns the `DLManagedTensor`; on error it
    /// is dropped (its deleter called).
    pub fn from_dlpack(dl: DlPack) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_tensor_from_dlpack(dl.as_ptr(), &mut out) })?;
        std::mem::forget(dl);
        Ok(Tensor::from_raw(out))
    }
}

impl Model {
    /// A copy of the parameter called `name` (an OLMo-core state-dict name such as
    /// `"blocks.0.attention.w_q.weight"`; [`Model::parameters`] lists them), with its dtype and
    /// shape, on the model's device. An unknown name is an error naming the nearest one.
    pub fn parameter(&self, name: &str) -> Result<Tensor> {
        let name = cstring(name, "name")?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::olm_model_get_parameter(self.ptr.as_ptr(), name.as_ptr(), &mut out) })?;
        Ok(Tensor::from_raw(out))
    }

    /// Overwrites the parameter called `name` in place with `value`: the parameter's shape, and
    /// its dtype or float32 (rounded to the parameter's dtype). A trainer of the model keeps its
    /// optimizer state for it. The model is unchanged on error.
    pub fn set_parameter(&mut self, name: &str, value: &Tensor) -> Result<()> {
        let name = cstring(name, "name")?;
        check(unsafe { sys::olm_model_set_parameter(self.ptr.as_ptr(), name.as_ptr(), value.ptr.as_ptr()) })
    }
}

/// Sets the number of CPU threads the library's operations use (1 to 1024), for the whole
/// process: every thread that calls into libolm applies it at its next call.
pub fn set_num_threads(num_threads: i32) -> Result<()> {
    check(unsafe { sys::olm_set_num_threads(num_threads) })
}

/// The number of CPU threads the library's operations use.
pub fn num_threads() -> i32 {
    unsafe { sys::olm_get_num_threads() }
}
