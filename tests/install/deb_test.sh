#!/usr/bin/env bash
# The Debian packages: cpack -G DEB makes libolm0 (libolm.so.0* and the private LibTorch
# libraries, with the symbols file), libolm-dev (header, .pc, CMake package, schema) and
# olm-tools (the CLI); dpkg installs them into a throwaway root (dpkg --root), the C example
# builds against them with pkg-config and find_package(olm) and runs, `olm --version` says the
# package version, and dpkg removes them again.
# usage: deb_test.sh BUILD_DIR  (made from the CPU-only build when there is one: a CUDA build's
# libolm0 holds several GB of CUDA libraries, too much to pack in a test)
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
say() { printf 'deb: %s\n' "$*"; }
fail() { printf 'deb: FAILED: %s\n' "$*" >&2; exit 1; }
command -v dpkg-deb > /dev/null || { say "SKIPPED: no dpkg-deb"; exit 77; }
if [ -f "$build/cpu-only/CPackConfig.cmake" ]; then
  build="$build/cpu-only"
elif grep -qE '^OLM_CUDA:[A-Z]+=ON' "$build/CMakeCache.txt"; then
  say "SKIPPED: a CUDA build's packages are several GB; make build/cpu-only (OLM_BUILD_CPU_ONLY=1 ./scripts/build.sh)"
  exit 77
fi
[ -x "$build/bin/olm" ] || fail "$build/bin/olm is not built"
version="$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$build/CMakeCache.txt")"
work="$(mktemp -d /tmp/olm-deb.XXXXXX)"
trap 'rm -rf "$work"' EXIT

say "cpack -G DEB in $build"
(cd "$work" && OLM_INSTALL_HARDLINK=1 OLM_CPACK_COMPRESSION=none \
  cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkgs" > "$work/cpack.log" 2>&1) || {
  tail -30 "$work/cpack.log" >&2; fail "cpack"; }
ls "$work/pkgs"/*.deb | sed "s|$work/pkgs/|deb: made |"
deb() { ls "$work/pkgs/$1"_*.deb 2> /dev/null | head -1; }
for p in libolm0 libolm-dev olm-tools; do
  [ -n "$(deb $p)" ] || fail "no $p package"
  [ "$(dpkg-deb -f "$(deb $p)" Version)" = "$version" ] || fail "$p's version is not $version"
done
for p in libolm0 libolm-dev olm-tools; do dpkg-deb -c "$(deb $p)" > "$work/$p.list"; done
grep -q ' ./usr/lib/libolm.so.0 ' "$work/libolm0.list" || fail "libolm0 lacks usr/lib/libolm.so.0"
grep -q ' ./usr/lib/libolm0/torch/lib/libtorch_cpu.so' "$work/libolm0.list" || fail "libolm0 lacks the private LibTorch"
grep -E 'usr/include|pkgconfig|/libolm\.so( |$)' "$work/libolm0.list" && fail "libolm0 holds development files"
for f in ./usr/include/olm.h ./usr/lib/pkgconfig/olm.pc ./usr/lib/cmake/olm/olmConfig.cmake \
         ./usr/share/olm/olm.fbs ./usr/lib/libolm.so; do
  grep -q " $f" "$work/libolm-dev.list" || fail "libolm-dev lacks $f"
done
grep -q ' ./usr/bin/olm$' "$work/olm-tools.list" || fail "olm-tools lacks usr/bin/olm"
dpkg-deb -I "$(deb libolm0)" symbols > "$work/symbols" || fail "libolm0 has no symbols control file"
diff -u "$root/cmake/libolm0.symbols" "$work/symbols" || fail "libolm0's symbols differ from cmake/libolm0.symbols"

say "dpkg --root (a throwaway root)"
r="$work/root"
mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/log"
touch "$r/var/lib/dpkg/status"
# libc6 & co. are the host's; the throwaway root has no package database for them.
dpkg --root="$r" --force-depends --force-script-chrootless --log=/dev/null -i \
  "$(deb libolm0)" "$(deb libolm-dev)" "$(deb olm-tools)" > "$work/dpkg.log" 2>&1 || {
  cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
dpkg --root="$r" -l | grep -E '^ii +(libolm0|libolm-dev|olm-tools) ' | sed 's/^/deb: /' | cut -c1-70
[ "$("$r/usr/bin/olm" --version)" = "olm $version" ] || fail "olm --version is not olm $version"

say "C example against the installed packages: pkg-config and find_package(olm)"
export PKG_CONFIG_PATH="$r/usr/lib/pkgconfig"
cc -std=c99 -Wall -Wextra -pedantic -Werror "$root/examples/c/olm_example.c" \
  $(pkg-config --cflags --libs olm) -o "$work/example_pc"
cmake -S "$root/examples/c" -B "$work/example_cmake" -DCMAKE_PREFIX_PATH="$r/usr" > /dev/null
cmake --build "$work/example_cmake" > /dev/null
for x in "$work/example_pc" "$work/example_cmake/olm_example"; do
  env -u LD_LIBRARY_PATH "$x" "$root/examples/c/tiny_olmo2.json" | tail -1 | sed 's/^/deb: /'
done

say "dpkg --purge"
dpkg --root="$r" --force-depends --force-script-chrootless --log=/dev/null --purge \
  olm-tools libolm-dev libolm0 > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge"; }
left="$( [ ! -d "$r/usr" ] || find "$r/usr" -type f | head -5)"
[ -z "$left" ] || fail "files left after purge: $left"
say "OK"
