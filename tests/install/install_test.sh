#!/usr/bin/env bash
# The installed prefix works on its own, moved anywhere (docs/design.md rule 12):
#  1. cmake --install into a temporary prefix (LibTorch's libraries are hard-linked rather
#     than copied, OLM_INSTALL_HARDLINK=1, so that a CUDA prefix costs no disk or time; the
#     prefix holds its own directory entries, so this tests the layout, not the wheel's).
#  2. Every RUNPATH in the prefix is $ORIGIN-relative; no installed file names the build
#     tree or the wheel's directory.
#  3. The prefix is moved; the C example is built against the moved prefix with pkg-config
#     and with find_package(olm), the Rust example, a fresh Rust crate written as the README's
#     quickstart (outside the repository, no build.rs) and the Go example too.
#  4. They run, with `olm --version` and `olm info`, with HOME elsewhere, LD_LIBRARY_PATH
#     empty and, where mount namespaces are available (root), the wheel environment, the
#     build tree and OLM_HOME hidden under empty tmpfs mounts. LD_DEBUG shows every library
#     loaded from the prefix or the system.
# usage: install_test.sh BUILD_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d /tmp/olm-install.XXXXXX)"
trap 'rm -rf "$work"' EXIT
say() { printf 'install: %s\n' "$*"; }
fail() { printf 'install: FAILED: %s\n' "$*" >&2; exit 1; }
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
torch_root="$(cache OLM_TORCH_ROOT)"
site="$(dirname "$torch_root")"
version="$(sed -n 's/^CMAKE_PROJECT_VERSION:[A-Z]*=//p' "$build/CMakeCache.txt")"
libdir="$(cache CMAKE_INSTALL_LIBDIR)"; libdir="${libdir:-lib}"

say "cmake --install (wheel libraries hard-linked)"
OLM_INSTALL_HARDLINK=1 cmake --install "$build" --prefix "$work/first" > "$work/install.log" \
  || { cat "$work/install.log"; fail "cmake --install"; }
{ grep 'olm: .* wheel libraries' "$work/install.log" || true; } | sed 's/^-- /install: /'
prefix="$work/first"
for f in "$libdir/libolm.so" "$libdir/libolm.so.0" "$libdir/libolm.so.$version" include/olm.h \
         share/olm/olm.fbs "$libdir/pkgconfig/olm.pc" "$libdir/cmake/olm/olmConfig.cmake" \
         "$libdir/cmake/olm/olmTargets.cmake" "$libdir/libolm0/torch/lib/libtorch_cpu.so" \
         "$libdir/libolm0/torch/lib/libc10.so"; do
  [ -e "$prefix/$f" ] || fail "missing $f"
done
[ -x "$prefix/bin/olm" ] || say "no bin/olm (a build of the library alone)"

say "RUNPATHs are \$ORIGIN-relative, nothing names the build tree or the wheel"
while IFS= read -r -d '' f; do
  head -c4 "$f" | grep -q $'\x7fELF' || continue
  rp="$(readelf -d "$f" | sed -n 's/.*R\(UN\)\?PATH.*\[\(.*\)\]/\2/p')"
  IFS=: read -ra parts <<< "$rp"
  for p in "${parts[@]}"; do
    case "$p" in
      '$ORIGIN'* | '${ORIGIN}'*) ;;
      # The wheel's own libraries carry a few stray build-machine entries (NVSHMEM's MPI
      # bootstrap); they may keep them, but never one into this build tree or the venv.
      "$build"* | "$site"* | "$HOME"*) fail "${f#"$prefix"/} has RUNPATH entry '$p'";;
      *) case "$f" in "$prefix/$libdir/libolm0/"*) ;; *) fail "${f#"$prefix"/} has RUNPATH entry '$p'";; esac;;
    esac
  done
done < <(find "$prefix" -type f -print0)
# The text files (pkg-config, CMake package): no path into the build tree or the venv.
# (Binaries hold such paths only in assertion messages' __FILE__ strings, never loaded.)
find "$prefix" -type f \( -name '*.pc' -o -name '*.cmake' -o -name '*.h' -o -name '*.fbs' \) -print0 \
  | xargs -0 grep -lF -e "$build" -e "$site" > "$work/leaks" || true
if [ -s "$work/leaks" ]; then
  cat "$work/leaks" >&2; fail "files above name $build or $site"
fi

say "moving the prefix"
mv "$work/first" "$work/moved"
prefix="$work/moved"
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
pkg-config --libs olm | grep -q "$prefix/$libdir" || fail "olm.pc does not follow the moved prefix"
[ "$(pkg-config --modversion olm)" = "$version" ] || fail "olm.pc version is not $version"
config="$work/tiny_olmo2.json"
cp "$root/examples/c/tiny_olmo2.json" "$config"

say "C example: pkg-config"
cc -std=c99 -Wall -Wextra -pedantic -Werror "$root/examples/c/olm_example.c" \
  $(pkg-config --cflags --libs olm) -o "$work/example_pc"
say "C example: find_package(olm) -> olm::olm"
cmake -S "$root/examples/c" -B "$work/example_cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$work/example_cmake" > /dev/null
cat > "$work/version.c" <<'C'
#include <olm.h>
#include <stdio.h>
int main(void) { printf("%s %d.%d.%d\n", olm_version(), OLM_VERSION_MAJOR, OLM_VERSION_MINOR, OLM_VERSION_PATCH); return 0; }
C
cc "$work/version.c" $(pkg-config --cflags --libs olm) -o "$work/version"
say "the README's C quickstart, verbatim (pkg-config)"
awk '/^## Quickstart: C/{r=1} r&&/^```c$/{p=1;next} p&&/^```/{exit} p' "$root/README.md" > "$work/quickstart.c"
[ -s "$work/quickstart.c" ] || fail "no C quickstart in README.md"
cc "$work/quickstart.c" $(pkg-config --cflags --libs olm) -o "$work/quickstart_c"

runs=("$work/example_pc $config" "$work/example_cmake/olm_example $config" "$work/quickstart_c")
cargo_run=()
if command -v cargo > /dev/null || [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$PATH:$HOME/.cargo/bin"
  export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
  say "Rust example (examples/rust)"
  CARGO_TARGET_DIR="$work/rust-target" cargo build --offline --quiet \
    --manifest-path "$root/examples/rust/Cargo.toml"
  runs+=("$work/rust-target/debug/olm-example")
  say "a fresh crate outside the repository: the README's Rust quickstart, no build.rs"
  mkdir -p "$work/quickstart/src"
  cat > "$work/quickstart/Cargo.toml" <<TOML
[package]
name = "quickstart"
version = "0.1.0"
edition = "2021"

[dependencies]
olm = { path = "$root/bindings/rust/olm" }
TOML
  # The README's code block, verbatim.
  awk '/^## Quickstart: Rust/{r=1} r&&/^```rust/{p=1;next} p&&/^```/{exit} p' "$root/README.md" \
    > "$work/quickstart/src/main.rs"
  [ -s "$work/quickstart/src/main.rs" ] || fail "no Rust quickstart in README.md"
  (cd "$work/quickstart" && CARGO_TARGET_DIR="$work/rust-target" cargo build --offline --quiet)
  cargo_run=(env CARGO_TARGET_DIR="$work/rust-target" PKG_CONFIG_PATH="$PKG_CONFIG_PATH" cargo run --offline --quiet
             --manifest-path "$work/quickstart/Cargo.toml")
else
  say "SKIPPED Rust: no cargo"
fi
if command -v go > /dev/null; then
  say "Go example (examples/go)"
  # A fresh GOCACHE: the cgo package cached from another prefix would keep its -L.
  (cd "$root/examples/go" && GOCACHE="$work/gocache" GOPROXY=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=1 go build -o "$work/go-example" .)
  runs+=("$work/go-example")
  say "the README's Go quickstart, verbatim, as a fresh module outside the repository"
  mkdir -p "$work/quickstart_go"
  awk '/^## Quickstart: Go/{r=1} r&&/^```go$/{p=1;next} p&&/^```/{exit} p' "$root/README.md" \
    > "$work/quickstart_go/main.go"
  [ -s "$work/quickstart_go/main.go" ] || fail "no Go quickstart in README.md"
  printf 'module quickstart\n\ngo 1.19\n\nrequire olm.dev/olm v0.0.0\n\nreplace olm.dev/olm => %s/bindings/go\n' "$root" \
    > "$work/quickstart_go/go.mod"
  (cd "$work/quickstart_go" && GOCACHE="$work/gocache" GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=1 go build -o "$work/quickstart-go" .)
  runs+=("$work/quickstart-go")
else
  say "SKIPPED Go: no go"
fi

# ---- run everything with the build tree, the wheel and OLM_HOME out of reach ----
olm_home="${OLM_HOME:-$HOME/.cache/olm}"
cat > "$work/run_all.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
cd "$work"  # not in the (hidden) build tree: ctest starts tests there
export HOME="$work/home" LD_LIBRARY_PATH= PKG_CONFIG_PATH=
mkdir -p "\$HOME"
check_loads() {  # every library the loader opens comes from the prefix or the system
  LD_DEBUG=libs LD_DEBUG_OUTPUT="$work/lddebug" "\$@" > /dev/null 2>&1 || true
  ls "$work"/lddebug.* > /dev/null || { echo "install: FAILED: no LD_DEBUG output for \$1" >&2; exit 1; }
  if grep -h 'calling init:' "$work"/lddebug.* | grep -v -e "$prefix/" -e ' /lib' -e ' /usr/lib' \
      -e ' /usr/local/lib' -e 'linux-vdso' -e 'ld-linux'; then
    echo "install: FAILED: \$1 loaded the libraries above from outside the prefix" >&2; exit 1
  fi
  if grep -h 'calling init:' "$work"/lddebug.* | grep -e "$build" -e "$site"; then
    echo "install: FAILED: \$1 loaded the build tree or the wheel" >&2; exit 1
  fi
  rm -f "$work"/lddebug.*
}
out="\$("$work/version")"
[ "\$out" = "$version $version" ] || { echo "install: FAILED: olm_version()/OLM_VERSION_* say '\$out', project VERSION $version" >&2; exit 1; }
echo "install: olm_version() = $version"
if [ -x "$prefix/bin/olm" ]; then
  v="\$("$prefix/bin/olm" --version)"
  [ "\$v" = "olm $version" ] || { echo "install: FAILED: olm --version says '\$v'" >&2; exit 1; }
  echo "install: \$v"
  "$prefix/bin/olm" info --preset olmo2_1M --vocab 256 > /dev/null
  check_loads "$prefix/bin/olm" info --preset olmo2_1M --vocab 256
fi
SH
for r in "${runs[@]}"; do
  cat >> "$work/run_all.sh" <<SH
echo "install: run ${r%% *}" | sed "s|$work/||"
$r | tail -1
check_loads $r
SH
done
if ((${#cargo_run[@]})); then
  cat >> "$work/run_all.sh" <<SH
echo "install: cargo run (README quickstart)"
$(printf '%q ' "${cargo_run[@]}") | tail -1
SH
fi
chmod +x "$work/run_all.sh"

hide=("$site" "$build" "$olm_home")
if [ "$(id -u)" -eq 0 ] && unshare -m true 2> /dev/null; then
  say "running with HOME=$work/home, LD_LIBRARY_PATH empty; hidden: ${hide[*]}"
  mounts=""
  for d in "${hide[@]}"; do [ -d "$d" ] && mounts+="mount -t tmpfs olm-hidden '$d'; "; done
  unshare -m bash -c "mount --make-rprivate / && $mounts
    [ ! -e '$torch_root/lib/libtorch_cpu.so' ] || { echo 'install: wheel still visible' >&2; exit 1; }
    '$work/run_all.sh'"
else
  say "running with HOME=$work/home, LD_LIBRARY_PATH empty (no mount namespace: wheel and build tree not hidden, LD_DEBUG checks only)"
  "$work/run_all.sh"
fi
say "OK"
