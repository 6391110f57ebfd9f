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

add_library(olm::torch INTERFACE IMPORTED)
set_target_properties(olm::torch PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${OLM_TORCH_ROOT}/include"
  # The wheels are built with the C++11 ABI; mismatching it gives link errors on std::string.
  INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=1"
  # libtorch.so pulls in libtorch_cuda.so (CUDA kernels register themselves at load time).
  INTERFACE_LINK_LIBRARIES "-Wl,--no-as-needed;${OLM_TORCH_ROOT}/lib/libtorch.so;${OLM_TORCH_ROOT}/lib/libtorch_cpu.so;${OLM_TORCH_ROOT}/lib/libc10.so;-Wl,--as-needed")
set(OLM_TORCH_LIB_DIR "${OLM_TORCH_ROOT}/lib")
