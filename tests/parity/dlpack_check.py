"""DLPack between libolm and PyTorch through the C ABI only (ctypes): zero-copy both ways.

usage: dlpack_check.py --lib build/libolm.so
"""
import argparse
import ctypes as C
import sys

import numpy as np
import torch
import torch.utils.dlpack

from olm_ctypes import Olm


class DLTensor(C.Structure):
    _fields_ = [("data", C.c_void_p), ("device_type", C.c_int32), ("device_id", C.c_int32),
                ("ndim", C.c_int32), ("code", C.c_uint8), ("bits", C.c_uint8), ("lanes", C.c_uint16),
                ("shape", C.POINTER(C.c_int64)), ("strides", C.POINTER(C.c_int64)),
                ("byte_offset", C.c_uint64)]


class DLManagedTensor(C.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", C.c_void_p), ("deleter", C.c_void_p)]


py = C.pythonapi
py.PyCapsule_New.restype = C.py_object
py.PyCapsule_New.argtypes = [C.c_void_p, C.c_char_p, C.c_void_p]
py.PyCapsule_GetPointer.restype = C.c_void_p
py.PyCapsule_GetPointer.argtypes = [C.py_object, C.c_char_p]
py.PyCapsule_SetName.restype = C.c_int
py.PyCapsule_SetName.argtypes = [C.py_object, C.c_char_p]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    olm = Olm(ap.parse_args().lib)
    lib = olm.lib
    lib.olm_tensor_to_dlpack.restype = C.c_void_p
    lib.olm_tensor_to_dlpack.argtypes = [C.c_void_p, C.POINTER(C.c_void_p)]
    lib.olm_tensor_from_dlpack.restype = C.c_void_p
    lib.olm_tensor_from_dlpack.argtypes = [C.c_void_p, C.POINTER(C.c_void_p)]
    lib.olm_model_get_parameter.restype = C.c_void_p
    lib.olm_model_get_parameter.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(C.c_void_p)]

    # olm -> torch: a capsule named "dltensor" that torch consumes (it calls the deleter).
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = olm.tensor(values)
    dl = C.c_void_p()
    olm.check(lib.olm_tensor_to_dlpack(t, C.byref(dl)))
    data = DLManagedTensor.from_address(dl.value).dl_tensor.data
    x = torch.utils.dlpack.from_dlpack(py.PyCapsule_New(dl.value, b"dltensor", None))
    assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3), (x.dtype, x.shape)
    assert x.data_ptr() == data, "torch.from_dlpack copied"
    assert np.array_equal(x.numpy(), values)
    x[1, 2] = 50
    assert olm.to_numpy(t)[1, 2] == 50, "a write through torch shows in the olm tensor"
    lib.olm_tensor_free(t)
    assert float(x[1, 2]) == 50 and float(x.sum()) == 60, "torch's tensor outlives the olm tensor"
    print("olm -> torch: zero-copy, shared writes, independent lifetimes")

    # torch -> olm: the capsule's pointer, then the capsule is marked used so torch does not delete it.
    y = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # strided
    cap = torch.utils.dlpack.to_dlpack(y)
    ptr = py.PyCapsule_GetPointer(cap, b"dltensor")
    back = C.c_void_p()
    olm.check(lib.olm_tensor_from_dlpack(ptr, C.byref(back)))
    assert py.PyCapsule_SetName(cap, b"used_dltensor") == 0
    del cap
    assert np.array_equal(olm.to_numpy(back), y.numpy()), "strides honoured"
    y[0, 0] = -1
    assert olm.to_numpy(back)[0, 0] == -1, "olm reads torch's memory"
    again = C.c_void_p()
    olm.check(lib.olm_tensor_to_dlpack(back, C.byref(again)))
    assert DLManagedTensor.from_address(again.value).dl_tensor.data == y.data_ptr()
    z = torch.utils.dlpack.from_dlpack(py.PyCapsule_New(again.value, b"dltensor", None))
    lib.olm_tensor_free(back)
    del y
    assert float(z[0, 0]) == -1
    print("torch -> olm -> torch: the same memory throughout")

    # A parameter to torch.
    cfg = olm.config_from_json(
        '{"d_model": 32, "vocab_size": 64, "n_layers": 1, "block": {"name": "reordered_norm", '
        '"attention": {"n_heads": 4, "bias": false}, "feed_forward": {"hidden_size": 96, "bias": false}, '
        '"layer_norm": {"name": "rms", "bias": false}}, "lm_head": {"bias": false}}')
    model = olm.model(cfg)
    p = C.c_void_p()
    olm.check(lib.olm_model_get_parameter(model, b"blocks.0.attention.w_q.weight", C.byref(p)))
    w = olm.to_numpy(p)
    olm.check(lib.olm_tensor_to_dlpack(p, C.byref(dl)))
    lib.olm_tensor_free(p)
    pw = torch.utils.dlpack.from_dlpack(py.PyCapsule_New(dl.value, b"dltensor", None))
    assert np.array_equal(pw.numpy(), w) and tuple(pw.shape) == (32, 32)
    lib.olm_model_free(model)
    lib.olm_config_free(cfg)
    print("parameter -> torch: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
