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
# cmake --install, then the C example through pkg-config and find_package(olm).
add_test(NAME install_test COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(install_test PROPERTIES TIMEOUT 300)
# The header's ABI against the committed baseline (additions pass, breaks fail).
add_test(NAME abi_check COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/abi/check_abi.sh)
set_tests_properties(headertest_c99 headertest_cxx17 exported_symbols install_test abi_check
  PROPERTIES LABELS "packaging")
