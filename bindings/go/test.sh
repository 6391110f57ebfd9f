#!/usr/bin/env bash
# The Go suite: vet and test the binding, then build and run the example.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PKG_CONFIG_PATH="$root/build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}" GOPATH="${GOPATH:-$HOME/.cache/go}"
cd "$root/bindings/go"
go vet ./...
go test -count=1 ./...
cd "$root/examples/go"
go vet ./...
go run .
