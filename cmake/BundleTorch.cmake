# Install-time script (see cmake/Packaging.cmake): copies the wheel libraries that libolm.so and
# the olm command load into <libdir>/libolm<major>/, at the same place relative to the wheel's
# site-packages (torch/lib/..., nvidia/<pkg>/lib/...). Inputs, set by the install(CODE) before
# it: OLM_WHEEL_SITE, OLM_PRIVATE_LIBDIR, OLM_BUNDLE_CUDA, OLM_TORCH_DLOPENED, OLM_BUNDLE_INPUTS.
# Environment: OLM_INSTALL_HARDLINK=1 hard-links instead of copying (same file system only).
set(_inputs)
foreach(_f IN LISTS OLM_BUNDLE_INPUTS)
  if(EXISTS "${_f}")          # a build of only the `olm` target has no CLI
    list(APPEND _inputs "${_f}")
  endif()
endforeach()
set(_extra)
foreach(_n IN LISTS OLM_TORCH_DLOPENED)
  if(EXISTS "${OLM_WHEEL_SITE}/torch/lib/${_n}")
    list(APPEND _extra "${OLM_WHEEL_SITE}/torch/lib/${_n}")
  endif()
endforeach()
string(REGEX REPLACE "([][+.*()^$?|\\\\])" "\\\\\\1" _site_re "${OLM_WHEEL_SITE}")
file(GET_RUNTIME_DEPENDENCIES
  LIBRARIES ${_inputs} ${_extra}
  RESOLVED_DEPENDENCIES_VAR _resolved
  UNRESOLVED_DEPENDENCIES_VAR _unresolved
  # The GPU driver is the machine's, never bundled.
  PRE_EXCLUDE_REGEXES "^libcuda\\.so" "^libnvidia-"
  POST_INCLUDE_REGEXES "^${_site_re}/"
  POST_EXCLUDE_REGEXES ".*")
if(_unresolved)
  message(STATUS "olm: not bundled (system or driver libraries): ${_unresolved}")
endif()
list(APPEND _resolved ${_extra})
list(REMOVE_DUPLICATES _resolved)

# A CUDA build also takes what the NVIDIA libraries dlopen (cuDNN's engines, NVRTC's
# builtins, NVSHMEM's transports): every shared library in each nvidia/<pkg>/lib it uses.
set(_files)
set(_nvidia_dirs)
foreach(_f IN LISTS _resolved)
  file(RELATIVE_PATH _rel "${OLM_WHEEL_SITE}" "${_f}")
  if(_rel MATCHES "^nvidia/")
    if(NOT OLM_BUNDLE_CUDA)
      continue()
    endif()
    get_filename_component(_d "${_rel}" DIRECTORY)
    list(APPEND _nvidia_dirs "${_d}")
  endif()
  list(APPEND _files "${_rel}")
endforeach()
if(_files MATCHES "torch/lib/libtorch_cuda\\.so")
  list(REMOVE_DUPLICATES _nvidia_dirs)
  foreach(_d IN LISTS _nvidia_dirs)
    file(GLOB _more RELATIVE "${OLM_WHEEL_SITE}" "${OLM_WHEEL_SITE}/${_d}/*.so*")
    list(APPEND _files ${_more})
  endforeach()
endif()
list(REMOVE_DUPLICATES _files)
list(SORT _files)

set(_dest_root "${CMAKE_INSTALL_PREFIX}/${OLM_PRIVATE_LIBDIR}")
set(_bytes 0)
foreach(_rel IN LISTS _files)
  get_filename_component(_d "${_rel}" DIRECTORY)
  if("$ENV{OLM_INSTALL_HARDLINK}" STREQUAL "1")
    set(_dst "$ENV{DESTDIR}${_dest_root}/${_rel}")
    file(MAKE_DIRECTORY "$ENV{DESTDIR}${_dest_root}/${_d}")
    file(REMOVE "${_dst}")
    file(CREATE_LINK "${OLM_WHEEL_SITE}/${_rel}" "${_dst}" COPY_ON_ERROR)
    list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_dest_root}/${_rel}")
  else()
    file(INSTALL DESTINATION "${_dest_root}/${_d}" TYPE SHARED_LIBRARY FILES "${OLM_WHEEL_SITE}/${_rel}")
  endif()
  file(SIZE "${OLM_WHEEL_SITE}/${_rel}" _size)
  math(EXPR _bytes "${_bytes} + ${_size} / 1048576")
endforeach()
list(LENGTH _files _n)
message(STATUS "olm: ${_n} wheel libraries (${_bytes} MiB) in ${_dest_root}")
