# LibTorch from the PyPI torch wheel: an imported target `olm::torch` without TorchConfig.cmake,
# whose CUDA probing is slow and would make the CUDA toolkit's version a configure-time
# requirement. Set OLM_TORCH_ROOT to the wheel's `torch` package directory, or let us ask the
# Python interpreter in OLM_PYTHON (default: python3) where it is.
if(NOT OLM_TORCH_ROOT)
  if(NOT OLM_PYTHON)
    set(OLM_PYTHON python3)
  endif()
  execute_process(
    COMMAND ${OLM_PYTHON} -c "import os, torch; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE OLM_TORCH_ROOT OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _olm_torch_rc ERROR_QUIET)
  if(NOT _olm_torch_rc EQUAL 0)
    message(FATAL_ERROR "olm: cannot locate the torch wheel; run scripts/setup.sh or pass -DOLM_TORCH_ROOT=<site-packages>/torch")
  endif()
endif()
set(OLM_TORCH_ROOT "${OLM_TORCH_ROOT}" CACHE PATH "The torch package directory of the PyPI wheel")
if(NOT EXISTS "${OLM_TORCH_ROOT}/lib/libtorch.so")
  message(FATAL_ERROR "olm: ${OLM_TORCH_ROOT}/lib/libtorch.so not found")
endif()
file(STRINGS "${OLM_TORCH_ROOT}/version.py" _olm_torch_version_line REGEX "^__version__")
message(STATUS "olm: LibTorch from ${OLM_TORCH_ROOT} (${_olm_torch_version_line})")

# ---- OLM_CUDA: a CUDA build (LibTorch's CUDA backend, olm's kernels) or a CPU-only one ----
# Default: ON when a CUDA compiler is found, OFF otherwise. OLM_WITH_CUDA is the old name and
# still works (-DOLM_WITH_CUDA=OFF means -DOLM_CUDA=OFF); the rest of the build reads
# OLM_WITH_CUDA, which is set from OLM_CUDA here.
if(NOT DEFINED OLM_CUDA)
  if(DEFINED OLM_WITH_CUDA)
    set(_olm_cuda_default ${OLM_WITH_CUDA})
  else()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      set(_olm_cuda_default ON)
    else()
      set(_olm_cuda_default OFF)
    endif()
  endif()
endif()
# (Also types a -DOLM_CUDA=OFF given without :BOOL.)
option(OLM_CUDA "Build with CUDA (LibTorch's CUDA backend, kernels/, NCCL); OFF links no CUDA library"
       ${_olm_cuda_default})
set(OLM_WITH_CUDA ${OLM_CUDA} CACHE BOOL "Deprecated alias of OLM_CUDA" FORCE)

add_library(olm::torch INTERFACE IMPORTED)
if(OLM_CUDA)
  # libtorch.so only pulls in libtorch_cuda.so (CUDA kernels register themselves at load time).
  set(_olm_torch_libs libtorch.so libtorch_cpu.so libc10.so)
else()
  # CPU-only: ATen's CPU kernels and c10; nothing that NEEDs a CUDA library. (The CUDA wheel's
  # libtorch_cpu.so itself still NEEDs libcudart/libcupti, which the install bundles; a CPU
  # wheel, torch==X+cpu, has none.)
  set(_olm_torch_libs libtorch_cpu.so libc10.so)
endif()
set(_olm_torch_link "-Wl,--no-as-needed")
foreach(_l IN LISTS _olm_torch_libs)
  list(APPEND _olm_torch_link "${OLM_TORCH_ROOT}/lib/${_l}")
endforeach()
list(APPEND _olm_torch_link "-Wl,--as-needed")
set_target_properties(olm::torch PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${OLM_TORCH_ROOT}/include"
  # The wheels are built with the C++11 ABI; mismatching it gives link errors on std::string.
  INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=1"
  INTERFACE_LINK_LIBRARIES "${_olm_torch_link}")
set(OLM_TORCH_LIB_DIR "${OLM_TORCH_ROOT}/lib")
