#!/usr/bin/env bash
# CRC-32 throughput of zlib (olm's checkpoints) against the table implementation it replaced,
# interleaved pairs on one 256 MiB buffer: benchmarks/crc32.sh [pairs] (default 5).
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc -O2 -std=c99 -Wall -Wextra "$dir/crc32_bench.c" -lz -o "$out/crc32_bench"
"$out/crc32_bench" "${1:-5}"
