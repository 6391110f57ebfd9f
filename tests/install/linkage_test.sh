#!/usr/bin/env bash
# What libolm.so links, by readelf -d (direct NEEDED entries) and ldd (the whole closure):
#  - a CPU-only build (OLM_CUDA=OFF) NEEDs no CUDA library: no libcuda*, libcudart*,
#    libtorch_cuda*, libc10_cuda*, libnccl*, libcudnn*, libcublas*;
#  - a CUDA build NEEDs libtorch_cuda.so (so the CUDA backend registers) but nothing in its
#    closure NEEDs the driver (libcuda.so.1), which is what lets it load on a machine without
#    a GPU (tests/install/install_test.sh then runs it on the CPU here).
# usage: linkage_test.sh LIBRARY cpu|cuda
set -euo pipefail
lib="$1"; kind="$2"
needed="$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
echo "linkage: $(basename "$lib") ($kind build) NEEDs: $(echo $needed)"
cuda_re='^lib(cuda|cudart|torch_cuda|c10_cuda|nccl|cudnn|cublas|cusparse|cufft|curand|nvrtc|nvshmem)'
closure="$(ldd "$lib")"
if grep -q 'not found' <<< "$closure"; then
  grep 'not found' <<< "$closure" >&2; echo "linkage: FAILED: unresolved libraries" >&2; exit 1
fi
if grep -E '^\s*libcuda\.so' <<< "$closure"; then
  echo "linkage: FAILED: the closure NEEDs the GPU driver (libcuda.so), so it cannot load without a GPU" >&2; exit 1
fi
case "$kind" in
  cpu)
    if grep -E "$cuda_re" <<< "$needed"; then
      echo "linkage: FAILED: a CPU-only build NEEDs the CUDA libraries above" >&2; exit 1
    fi
    grep -qx 'libtorch_cpu.so' <<< "$needed" || { echo "linkage: FAILED: no libtorch_cpu.so" >&2; exit 1; }
    ;;
  cuda)
    grep -qx 'libtorch_cuda.so' <<< "$needed" || {
      echo "linkage: FAILED: a CUDA build must NEED libtorch_cuda.so" >&2; exit 1; }
    ;;
  *) echo "usage: linkage_test.sh LIBRARY cpu|cuda" >&2; exit 2;;
esac
echo "linkage: OK"
