"""A thin ctypes view of libolm's C API for the Python-driven tests.

Deliberately independent of the project's own bindings: the parity tests exercise the C ABI as
a foreign caller sees it.
"""
import ctypes as C
import json

import numpy as np

OLM_DTYPE_INT32, OLM_DTYPE_INT64, OLM_DTYPE_FLOAT32 = 0, 1, 2
REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}


class OlmError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"olm error {code}: {message}")
        self.code = code
        self.message = message


class ModelOptions(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("param_dtype", C.c_int32), ("init_weights", C.c_int32)]


class LossOptions(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("ignore_index", C.c_int64),
        ("loss_reduction", C.c_int32),
        ("z_loss_multiplier", C.c_double),
        ("loss_div_factor", C.c_double),
        ("return_logits", C.c_int32),
        ("logits_to_keep", C.c_int64),
        ("cu_doc_lens", C.c_void_p),
        ("max_doc_len", C.c_int64),
    ]


class ForwardOptions(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("logits_to_keep", C.c_int64),
        ("cu_doc_lens", C.c_void_p),
        ("max_doc_len", C.c_int64),
    ]


class LossResult(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("loss", C.c_void_p),
        ("ce_loss", C.c_void_p),
        ("z_loss", C.c_void_p),
        ("logits", C.c_void_p),
        ("loss_value", C.c_double),
        ("ce_loss_value", C.c_double),
        ("z_loss_value", C.c_double),
        ("lb_loss", C.c_void_p),
        ("router_z_loss", C.c_void_p),
        ("lb_loss_value", C.c_double),
        ("router_z_loss_value", C.c_double),
    ]


class StepMetrics(C.Structure):
    _fields_ = [
        ("struct_size", C.c_size_t),
        ("step", C.c_int64),
        ("loss", C.c_double),
        ("ce_loss", C.c_double),
        ("z_loss", C.c_double),
        ("grad_norm", C.c_double),
        ("lr", C.c_double),
        ("tokens", C.c_int64),
        ("tokens_seen", C.c_int64),
        ("tokens_per_second", C.c_double),
        ("step_seconds", C.c_double),
        ("skipped", C.c_int32),
        ("skipped_steps", C.c_int64),
        ("lb_loss", C.c_double),
        ("router_z_loss", C.c_double),
    ]


class Olm:
    def __init__(self, path):
        lib = C.CDLL(path)
        self.lib = lib
        vp, sz, i64, i32 = C.c_void_p, C.c_size_t, C.c_int64, C.c_int32
        pvp = C.POINTER(vp)
        sigs = {
            "olm_error_code": (i32, [vp]),
            "olm_error_message": (C.c_char_p, [vp]),
            "olm_error_free": (None, [vp]),
            "olm_buffer_data": (vp, [vp]),
            "olm_buffer_size": (sz, [vp]),
            "olm_buffer_free": (None, [vp]),
            "olm_config_from_preset": (vp, [C.c_char_p, i64, pvp]),
            "olm_config_from_json": (vp, [C.c_char_p, sz, pvp]),
            "olm_config_to_json": (vp, [vp, pvp]),
            "olm_config_num_params": (vp, [vp, C.POINTER(i64), C.POINTER(i64)]),
            "olm_config_num_flops_per_token": (vp, [vp, i64, C.POINTER(i64)]),
            "olm_config_num_active_params": (vp, [vp, C.POINTER(i64), C.POINTER(i64)]),
            "olm_config_free": (None, [vp]),
            "olm_tensor_create": (vp, [i32, C.POINTER(i64), sz, vp, sz, pvp]),
            "olm_tensor_ndim": (vp, [vp, C.POINTER(sz)]),
            "olm_tensor_shape": (vp, [vp, C.POINTER(i64), sz]),
            "olm_tensor_nbytes": (vp, [vp, C.POINTER(sz)]),
            "olm_tensor_copy_to_host": (vp, [vp, vp, sz]),
            "olm_tensor_free": (None, [vp]),
            "olm_model_options_init_sized": (None, [C.POINTER(ModelOptions), C.c_size_t]),
            "olm_model_create": (vp, [vp, C.c_char_p, C.POINTER(ModelOptions), pvp]),
            "olm_forward_options_init_sized": (None, [C.POINTER(ForwardOptions), C.c_size_t]),
            "olm_model_forward": (vp, [vp, vp, C.POINTER(ForwardOptions), pvp]),
            "olm_loss_options_init_sized": (None, [C.POINTER(LossOptions), C.c_size_t]),
            "olm_model_loss": (vp, [vp, vp, vp, C.POINTER(LossOptions), C.POINTER(LossResult)]),
            "olm_loss_result_free": (None, [C.POINTER(LossResult)]),
            "olm_model_load_safetensors": (vp, [vp, C.c_char_p]),
            "olm_model_save_safetensors": (vp, [vp, C.c_char_p]),
            "olm_model_free": (None, [vp]),
            "olm_train_config_from_json": (vp, [C.c_char_p, sz, pvp]),
            "olm_train_config_free": (None, [vp]),
            "olm_trainer_create": (vp, [vp, vp, pvp]),
            "olm_trainer_step": (vp, [vp, vp, vp, C.POINTER(StepMetrics)]),
            "olm_trainer_save_checkpoint": (vp, [vp, C.c_char_p, pvp]),
            "olm_trainer_load_checkpoint": (vp, [vp, C.c_char_p]),
            "olm_trainer_free": (None, [vp]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args

    def check(self, err):
        if err:
            code = self.lib.olm_error_code(err)
            msg = self.lib.olm_error_message(err).decode()
            self.lib.olm_error_free(err)
            raise OlmError(code, msg)

    # configs
    def config_from_preset(self, name, vocab):
        out = C.c_void_p()
        self.check(self.lib.olm_config_from_preset(name.encode(), vocab, C.byref(out)))
        return out

    def config_from_json(self, text):
        raw = text.encode()
        out = C.c_void_p()
        self.check(self.lib.olm_config_from_json(raw, len(raw), C.byref(out)))
        return out

    def config_to_dict(self, cfg):
        buf = C.c_void_p()
        self.check(self.lib.olm_config_to_json(cfg, C.byref(buf)))
        text = C.string_at(self.lib.olm_buffer_data(buf), self.lib.olm_buffer_size(buf)).decode()
        self.lib.olm_buffer_free(buf)
        return json.loads(text)

    def num_params(self, cfg):
        total, non_emb = C.c_int64(), C.c_int64()
        self.check(self.lib.olm_config_num_params(cfg, C.byref(total), C.byref(non_emb)))
        return total.value, non_emb.value

    def num_active_params(self, cfg):
        active, active_non_emb = C.c_int64(), C.c_int64()
        self.check(self.lib.olm_config_num_active_params(cfg, C.byref(active), C.byref(active_non_emb)))
        return active.value, active_non_emb.value

    def flops(self, cfg, seq_len):
        out = C.c_int64()
        self.check(self.lib.olm_config_num_flops_per_token(cfg, seq_len, C.byref(out)))
        return out.value

    # tensors
    def tensor(self, array):
        array = np.ascontiguousarray(array)
        dtype = {np.dtype(np.int64): OLM_DTYPE_INT64, np.dtype(np.int32): OLM_DTYPE_INT32,
                 np.dtype(np.float32): OLM_DTYPE_FLOAT32}[array.dtype]
        shape = (C.c_int64 * array.ndim)(*array.shape)
        out = C.c_void_p()
        self.check(self.lib.olm_tensor_create(dtype, shape, array.ndim, array.ctypes.data,
                                              array.nbytes, C.byref(out)))
        return out

    def to_numpy(self, t, dtype=np.float32):
        ndim = C.c_size_t()
        self.check(self.lib.olm_tensor_ndim(t, C.byref(ndim)))
        shape = (C.c_int64 * max(ndim.value, 1))()
        self.check(self.lib.olm_tensor_shape(t, shape, ndim.value))
        out = np.empty(tuple(shape[: ndim.value]), dtype=dtype)
        self.check(self.lib.olm_tensor_copy_to_host(t, out.ctypes.data, out.nbytes))
        return out

    # models
    def model(self, cfg, device="cpu", init_weights=True):
        opts = ModelOptions()
        self.lib.olm_model_options_init_sized(C.byref(opts), C.sizeof(opts))
        opts.init_weights = 1 if init_weights else 0
        out = C.c_void_p()
        self.check(self.lib.olm_model_create(cfg, device.encode(), C.byref(opts), C.byref(out)))
        return out

    def forward(self, model, ids, cu_doc_lens=None, max_doc_len=0):
        t = self.tensor(ids)
        opts = ForwardOptions()
        self.lib.olm_forward_options_init_sized(C.byref(opts), C.sizeof(opts))
        cu = self.tensor(cu_doc_lens) if cu_doc_lens is not None else None
        opts.cu_doc_lens = cu
        opts.max_doc_len = max_doc_len
        out = C.c_void_p()
        try:
            self.check(self.lib.olm_model_forward(model, t, C.byref(opts), C.byref(out)))
        finally:
            self.lib.olm_tensor_free(t)
            if cu is not None:
                self.lib.olm_tensor_free(cu)
        logits = self.to_numpy(out)
        self.lib.olm_tensor_free(out)
        return logits

    def loss(self, model, ids, labels, *, reduction="mean", z_loss_multiplier=0.0,
             loss_div_factor=None, ignore_index=-100, return_logits=False):
        opts = LossOptions()
        self.lib.olm_loss_options_init_sized(C.byref(opts), C.sizeof(opts))
        opts.loss_reduction = REDUCTIONS[reduction]
        opts.z_loss_multiplier = z_loss_multiplier
        # None: unset (0 in the C struct), as OLMo-core's None.
        opts.loss_div_factor = 0.0 if loss_div_factor is None else loss_div_factor
        opts.ignore_index = ignore_index
        opts.return_logits = 1 if return_logits else 0
        res = LossResult()
        res.struct_size = C.sizeof(LossResult)
        ti, tl = self.tensor(ids), self.tensor(labels)
        try:
            self.check(self.lib.olm_model_loss(model, ti, tl, C.byref(opts), C.byref(res)))
        finally:
            self.lib.olm_tensor_free(ti)
            self.lib.olm_tensor_free(tl)
        out = {
            "loss": self.to_numpy(res.loss),
            "ce_loss": self.to_numpy(res.ce_loss),
            "z_loss": None if not res.z_loss else self.to_numpy(res.z_loss),
            "logits": None if not res.logits else self.to_numpy(res.logits),
            "values": (res.loss_value, res.ce_loss_value, res.z_loss_value),
            "lb_loss": None if not res.lb_loss else self.to_numpy(res.lb_loss),
            "router_z_loss": None if not res.router_z_loss else self.to_numpy(res.router_z_loss),
            "lb_loss_value": res.lb_loss_value,
            "router_z_loss_value": res.router_z_loss_value,
        }
        self.lib.olm_loss_result_free(C.byref(res))
        return out

    def load(self, model, path):
        self.check(self.lib.olm_model_load_safetensors(model, str(path).encode()))

    def save(self, model, path):
        self.check(self.lib.olm_model_save_safetensors(model, str(path).encode()))

    # training
    def train_config(self, text):
        raw = text.encode()
        out = C.c_void_p()
        self.check(self.lib.olm_train_config_from_json(raw, len(raw), C.byref(out)))
        return out

    def trainer(self, model, train_config):
        out = C.c_void_p()
        self.check(self.lib.olm_trainer_create(model, train_config, C.byref(out)))
        return out

    def step(self, trainer, ids, labels=None):
        m = StepMetrics()
        m.struct_size = C.sizeof(StepMetrics)
        ti = self.tensor(ids)
        tl = self.tensor(labels) if labels is not None else None
        try:
            self.check(self.lib.olm_trainer_step(trainer, ti, tl, C.byref(m)))
        finally:
            self.lib.olm_tensor_free(ti)
            if tl is not None:
                self.lib.olm_tensor_free(tl)
        return m

    def save_checkpoint(self, trainer, folder):
        buf = C.c_void_p()
        self.check(self.lib.olm_trainer_save_checkpoint(trainer, str(folder).encode(), C.byref(buf)))
        path = C.string_at(self.lib.olm_buffer_data(buf), self.lib.olm_buffer_size(buf)).decode()
        self.lib.olm_buffer_free(buf)
        return path

    def load_checkpoint(self, trainer, path):
        self.check(self.lib.olm_trainer_load_checkpoint(trainer, str(path).encode()))
