# Install rules, the relocatable run-time layout, and Debian packages (CPack).
#
# Layout of an installed prefix (any prefix; nothing in it names the build tree or the venv):
#   bin/olm                                   RUNPATH $ORIGIN/../<libdir>/libolm0/torch/lib
#   <libdir>/libolm.so.0 -> libolm.so.0.1.0   RUNPATH $ORIGIN/libolm0/torch/lib
#   <libdir>/libolm0/torch/lib/*.so*          the wheel's LibTorch libraries libolm needs
#   <libdir>/libolm0/nvidia/<pkg>/lib/*.so*   the wheel's CUDA libraries (CUDA builds; and the
#                                             two the CUDA wheel's libtorch_cpu.so NEEDs)
#   <libdir>/pkgconfig/olm.pc, <libdir>/cmake/olm/, include/olm.h, share/olm/olm.fbs
# The private directory mirrors the wheel's site-packages layout (torch/lib next to
# nvidia/<pkg>/lib), so the wheel libraries' own RPATH ($ORIGIN:$ORIGIN/../../nvidia/<pkg>/lib)
# finds their companions there without rewriting them. Only libraries that come from the wheel
# are copied; distribution libraries (libc, libstdc++, libflatbuffers2) stay system
# dependencies (the .deb names them).

# ---- Version: the project VERSION is the one version (olm.h's macros, olm_version(), the
# package, `olm --version`); a mismatch in olm.h stops the configure.
file(STRINGS ${PROJECT_SOURCE_DIR}/include/olm.h _olm_h_version REGEX "^#define OLM_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" _olm_h_version "${_olm_h_version}")
if(NOT _olm_h_version STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "olm: include/olm.h says ${_olm_h_version}, CMakeLists.txt's project VERSION is ${PROJECT_VERSION}")
endif()

option(OLM_BUNDLE_TORCH "Copy the LibTorch libraries libolm needs into <libdir>/libolm${PROJECT_VERSION_MAJOR} (OFF: a packager provides them on the system library path)" ON)
option(OLM_BUNDLE_CUDA "With OLM_BUNDLE_TORCH, also copy the wheel's CUDA libraries (nvidia/*; several GB in a CUDA build)" ON)

set(OLM_PRIVATE_LIBDIR "${CMAKE_INSTALL_LIBDIR}/libolm${PROJECT_VERSION_MAJOR}")
set(OLM_PRIVATE_TORCH_LIBDIR "${OLM_PRIVATE_LIBDIR}/torch/lib")

# ---- RUNPATHs: the build tree uses the wheel directly, an install only $ORIGIN ----
if(OLM_BUNDLE_TORCH)
  set(_olm_lib_rpath "$ORIGIN/libolm${PROJECT_VERSION_MAJOR}/torch/lib")
  file(RELATIVE_PATH _olm_bin_to_torch "/p/${CMAKE_INSTALL_BINDIR}" "/p/${OLM_PRIVATE_TORCH_LIBDIR}")
  set(_olm_bin_rpath "$ORIGIN/${_olm_bin_to_torch}")
else()
  set(_olm_lib_rpath "")
  set(_olm_bin_rpath "")
endif()
# The build tree links with the final RUNPATH (BUILD_WITH_INSTALL_RPATH: CMake's own build
# RPATH of a CUDA build ends in an empty entry, which the loader reads as the current
# directory): the wheel's directory, then the installed one, which the install keeps alone
# (file(RPATH_CHANGE) needs the new RUNPATH to fit in the old one; this guarantees it).
function(_olm_rpath target installed)
  if(installed)
    set_target_properties(${target} PROPERTIES BUILD_WITH_INSTALL_RPATH ON
      INSTALL_RPATH "${OLM_TORCH_LIB_DIR}:${installed}")
  else()
    set_target_properties(${target} PROPERTIES BUILD_WITH_INSTALL_RPATH ON
      INSTALL_RPATH "${OLM_TORCH_LIB_DIR}")
  endif()
endfunction()
_olm_rpath(olm "${_olm_lib_rpath}")
_olm_rpath(olm_cli "${_olm_bin_rpath}")

# ---- Components: libolm0 (run time), libolm-dev (build against it), olm-tools (the CLI) ----
set(OLM_RUNTIME_COMPONENT libolm${PROJECT_VERSION_MAJOR})
configure_file(cmake/olm.pc.in ${CMAKE_CURRENT_BINARY_DIR}/olm.pc @ONLY)
install(TARGETS olm EXPORT olmTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT ${OLM_RUNTIME_COMPONENT}
          NAMELINK_COMPONENT libolm-dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES include/olm.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT libolm-dev)
install(FILES schema/olm.fbs DESTINATION ${CMAKE_INSTALL_DATADIR}/olm COMPONENT libolm-dev)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/olm.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT libolm-dev)
install(EXPORT olmTargets NAMESPACE olm:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/olm
  COMPONENT libolm-dev)
configure_package_config_file(cmake/olmConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/olmConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/olm)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/olmConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/olmConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/olmConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/olm COMPONENT libolm-dev)
install(TARGETS olm_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT olm-tools)
# Installed, the RUNPATH is the $ORIGIN-relative entry alone (none without OLM_BUNDLE_TORCH).
foreach(_t olm olm_cli)
  if(_t STREQUAL olm)
    set(_file "${CMAKE_INSTALL_LIBDIR}/$<TARGET_FILE_NAME:olm>")
    set(_new "${_olm_lib_rpath}")
    set(_comp ${OLM_RUNTIME_COMPONENT})
  else()
    set(_file "${CMAKE_INSTALL_BINDIR}/$<TARGET_FILE_NAME:olm_cli>")
    set(_new "${_olm_bin_rpath}")
    set(_comp olm-tools)
  endif()
  get_target_property(_old ${_t} INSTALL_RPATH)
  install(CODE "file(RPATH_CHANGE FILE \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${_file}\"
    OLD_RPATH \"${_old}\" NEW_RPATH \"${_new}\")" COMPONENT ${_comp})
endforeach()

# ---- The private LibTorch (and CUDA) libraries, found at install time ----
# file(GET_RUNTIME_DEPENDENCIES) follows libolm.so's and the CLI's NEEDED entries through the
# wheel's RPATHs; what resolves inside the wheel environment is copied, keeping its place
# relative to site-packages. Set OLM_INSTALL_HARDLINK=1 in the environment to hard-link
# instead of copying (the tests do, to install a multi-GB CUDA prefix in a second).
if(OLM_BUNDLE_TORCH)
  get_filename_component(OLM_WHEEL_SITE "${OLM_TORCH_ROOT}" DIRECTORY)
  # Loaded with dlopen, so no NEEDED entry names them: CUDA linear algebra and NVRTC.
  set(_olm_torch_dlopened)
  if(OLM_CUDA)
    set(_olm_torch_dlopened libtorch_cuda_linalg.so libcaffe2_nvrtc.so)
  endif()
  install(CODE "set(OLM_WHEEL_SITE \"${OLM_WHEEL_SITE}\")
set(OLM_PRIVATE_LIBDIR \"${OLM_PRIVATE_LIBDIR}\")
set(OLM_BUNDLE_CUDA ${OLM_BUNDLE_CUDA})
set(OLM_TORCH_DLOPENED \"${_olm_torch_dlopened}\")
set(OLM_BUNDLE_INPUTS \"$<TARGET_FILE:olm>;$<TARGET_FILE:olm_cli>\")"
    COMPONENT ${OLM_RUNTIME_COMPONENT})
  install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/BundleTorch.cmake COMPONENT ${OLM_RUNTIME_COMPONENT})
endif()

# ---- Debian packages: cpack -G DEB in the build directory ----
set(CPACK_PACKAGE_NAME olm)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "olm")
set(CPACK_PACKAGE_CONTACT "olm maintainers <olm@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Transformer language models on LibTorch behind a stable C ABI")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL ${OLM_RUNTIME_COMPONENT} libolm-dev olm-tools)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/allenai/OLMo-core")
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)
# Component -> package names and relations (CPack upper-cases component names in variables).
string(TOUPPER ${OLM_RUNTIME_COMPONENT} _olm_rt)
set(CPACK_DEBIAN_${_olm_rt}_PACKAGE_NAME ${OLM_RUNTIME_COMPONENT})
set(CPACK_DEBIAN_${_olm_rt}_PACKAGE_DEPENDS "libc6 (>= 2.34), libstdc++6 (>= 12), libgcc-s1, libflatbuffers2, zlib1g, libpcre2-8-0, libutf8proc2, libsentencepiece0")
# dpkg names a control file after its basename: cmake/libolm0.symbols goes in as `symbols`.
configure_file(cmake/${OLM_RUNTIME_COMPONENT}.symbols
  ${CMAKE_CURRENT_BINARY_DIR}/debian/${OLM_RUNTIME_COMPONENT}/symbols COPYONLY)
set(CPACK_DEBIAN_${_olm_rt}_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_BINARY_DIR}/debian/${OLM_RUNTIME_COMPONENT}/symbols)
set(CPACK_DEBIAN_${_olm_rt}_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_${_olm_rt}_DESCRIPTION "olm: transformer language models behind a C ABI (run-time library)\n libolm.so.0 with the LibTorch libraries it needs in a private directory.")
set(CPACK_DEBIAN_LIBOLM-DEV_PACKAGE_NAME libolm-dev)
set(CPACK_DEBIAN_LIBOLM-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_LIBOLM-DEV_PACKAGE_DEPENDS "${OLM_RUNTIME_COMPONENT} (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_LIBOLM-DEV_DESCRIPTION "olm: development files\n olm.h, pkg-config file, CMake package (olm::olm) and the FlatBuffers schema.")
set(CPACK_DEBIAN_OLM-TOOLS_PACKAGE_NAME olm-tools)
set(CPACK_DEBIAN_OLM-TOOLS_PACKAGE_SECTION science)
# The CLI links the core statically but uses the same private LibTorch libraries.
set(CPACK_DEBIAN_OLM-TOOLS_PACKAGE_DEPENDS "${OLM_RUNTIME_COMPONENT} (= ${PROJECT_VERSION})")
set(CPACK_DEBIAN_OLM-TOOLS_DESCRIPTION "olm: the olm command\n train, resume, evaluate, generate, convert and benchmark language models.")
foreach(_c ${OLM_RUNTIME_COMPONENT} libolm-dev olm-tools)
  string(TOUPPER ${_c} _cu)
  set(CPACK_COMPONENT_${_cu}_DESCRIPTION "${CPACK_DEBIAN_${_cu}_DESCRIPTION}")
endforeach()
# cpack-time overrides (environment): OLM_CPACK_COMPONENTS, OLM_CPACK_COMPRESSION.
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_SOURCE_DIR}/cmake/CPackProjectConfig.cmake)
include(CPack)
