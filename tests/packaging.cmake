# Packaging and ABI checks, registered as CTest tests.

# olm.h compiles on its own as strict C99 and C++17.
add_test(NAME headertest_c99
  COMMAND ${CMAKE_C_COMPILER} -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only
          -I${PROJECT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/headertest/headertest.c)
add_test(NAME headertest_cxx17
  COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -Wall -Wextra -pedantic -Werror -fsyntax-only
          -I${PROJECT_SOURCE_DIR}/include ${CMAKE_CURRENT_SOURCE_DIR}/headertest/headertest.cpp)
# Only olm_* is exported, exactly the functions the header declares; SONAME libolm.so.0.
add_test(NAME exported_symbols
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/headertest/check_exports.sh $<TARGET_FILE:olm>
          ${PROJECT_SOURCE_DIR}/include/olm.h)
# cmake/libolm0.symbols (Debian symbols file) lists exactly the exported symbols.
add_test(NAME debian_symbols
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/check_symbols.sh $<TARGET_FILE:olm>
          ${PROJECT_SOURCE_DIR}/cmake/libolm0.symbols ${PROJECT_VERSION})
# cmake --install, moved, the build tree and the venv hidden: C (pkg-config, find_package),
# Rust (the example and the README's quickstart in a fresh crate) and Go run against it.
add_test(NAME install_test COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.sh ${CMAKE_BINARY_DIR})
# What this build links (CUDA: libtorch_cuda but never the driver).
if(OLM_CUDA)
  set(_olm_linkage cuda)
else()
  set(_olm_linkage cpu)
endif()
add_test(NAME linkage COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/linkage_test.sh $<TARGET_FILE:olm> ${_olm_linkage})
# The CPU-only build in build/cpu-only (skipped unless OLM_BUILD_CPU_ONLY=1 made it).
add_test(NAME cpu_only_build COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/cpu_build_test.sh ${CMAKE_BINARY_DIR})
# Debian packages from CPack, installed with dpkg --root into a throwaway root.
add_test(NAME deb_packages COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/deb_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(cpu_only_build deb_packages PROPERTIES SKIP_RETURN_CODE 77)
set_tests_properties(install_test deb_packages PROPERTIES TIMEOUT 600)
set_tests_properties(cpu_only_build PROPERTIES TIMEOUT 900)
set_tests_properties(deb_packages PROPERTIES DEPENDS cpu_only_build)
# The header's ABI against the committed baseline (additions pass, breaks fail).
add_test(NAME abi_check COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/abi/check_abi.sh)
set_tests_properties(headertest_c99 headertest_cxx17 exported_symbols debian_symbols install_test
  linkage cpu_only_build deb_packages abi_check PROPERTIES LABELS "packaging")
