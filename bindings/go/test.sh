#!/usr/bin/env bash
# The Go suite: gofmt, vet and test the binding, then build and run the example.
# Links the library in the build tree through build/olm-uninstalled.pc (its rpath lets the
# test binaries and the example find libolm.so without LD_LIBRARY_PATH). Works from any cwd.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${OLM_BUILD_DIR:-$root/build}"
if [[ ! -e "$build/olm-uninstalled.pc" && ! -e "$build/olm.pc" ]]; then
  echo "bindings/go/test.sh: no olm pkg-config file in $build (build the library first)" >&2
  exit 1
fi
export PKG_CONFIG_PATH="$build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export GOPROXY=off GOFLAGS=-mod=readonly GOTOOLCHAIN=local GO111MODULE=on CGO_ENABLED=1
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}" GOPATH="${GOPATH:-$HOME/.cache/go}"

for dir in "$root/bindings/go" "$root/examples/go"; do
  unformatted="$(gofmt -l "$dir")"
  if [[ -n "$unformatted" ]]; then
    echo "bindings/go/test.sh: not gofmt-formatted:" "$unformatted" >&2
    exit 1
  fi
done

cd "$root/bindings/go"
go vet ./...
go test -count=1 ./...

cd "$root/examples/go"
go vet ./...
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/olm-example" .
"$bin/olm-example"
