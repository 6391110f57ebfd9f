#!/usr/bin/env bash
# Installs into a temporary prefix and builds the C example against it twice: with
# pkg-config and with CMake's find_package(olm). Then moves the prefix elsewhere and builds
# with pkg-config again (the .pc file is relocatable).
# usage: install_test.sh BUILD_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in lib/libolm.so lib/libolm.so.0 include/olm.h share/olm/olm.fbs lib/pkgconfig/olm.pc \
         lib/cmake/olm/olmConfig.cmake lib/cmake/olm/olmTargets.cmake; do
  [ -e "$prefix/$f" ] || { echo "install: missing $f" >&2; exit 1; }
done
config="$root/examples/c/tiny_olmo2.json"

echo "install: pkg-config build"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" cc -std=c99 -Wall -Wextra -pedantic -Werror \
  "$root/examples/c/olm_example.c" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs olm) \
  -o "$work/example_pc"
"$work/example_pc" "$config"

echo "install: CMake find_package(olm) build"
cmake -S "$root/examples/c" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/olm_example" "$config"

echo "install: relocated prefix"
mv "$prefix" "$work/moved"
PKG_CONFIG_PATH="$work/moved/lib/pkgconfig" pkg-config --cflags --libs olm | grep -q "$work/moved/lib" || {
  echo "install: olm.pc does not follow the moved prefix" >&2; exit 1; }
cc -std=c99 "$root/examples/c/olm_example.c" $(PKG_CONFIG_PATH="$work/moved/lib/pkgconfig" pkg-config --cflags --libs olm) \
  -o "$work/example_moved"
"$work/example_moved" "$config"
echo "install: OK"
