#!/usr/bin/env bash
# Sharded checkpoints survive kills: two ranks (started by hand with torchrun's variables)
# write a sharded checkpoint every step and are killed (SIGKILL: one rank, then the other, or
# both at once) at arbitrary moments; the newest checkpoint on disk must then be complete (every
# shard present, every checksum right: `olm eval` loads it in one process, at another world
# size), and training resumes from it. Repeated with several delays.
# usage: dist_checkpoint_kill_test.sh OLM_BINARY
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/checkpoint_kill_setup.sh" "$1"
start() {  # start RANK COMMAND...: one rank of 2 in the background
  local rank="$1"; shift
  RANK="$rank" WORLD_SIZE=2 LOCAL_RANK="$rank" LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
    OMP_NUM_THREADS=1 "$@" >/dev/null 2>&1 &
}
i=0
for delay in 0.35 0.8 1.3 0.05 2.1 0.6; do
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  before="$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)"
  for rank in 0 1; do
    if ls -d ckpt/step* >/dev/null 2>&1; then start "$rank" "$olm" resume ckpt
    else start "$rank" "$olm" train --config train.json; fi
    pids[$rank]=$!
  done
  for _ in $(seq 400); do [ "$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)" != "$before" ] && break; sleep 0.05; done
  sleep "$delay"
  # Alternately: rank 1 dies first, rank 0 dies first, both die together.
  case $((i % 3)) in
    0) kill -9 "${pids[1]}" 2>/dev/null || true; sleep 0.2; kill -9 "${pids[0]}" 2>/dev/null || true ;;
    1) kill -9 "${pids[0]}" 2>/dev/null || true; sleep 0.2; kill -9 "${pids[1]}" 2>/dev/null || true ;;
    2) kill -9 "${pids[0]}" "${pids[1]}" 2>/dev/null || true ;;
  esac
  wait "${pids[0]}" "${pids[1]}" 2>/dev/null || true
  i=$((i + 1))
  newest="ckpt/step$(ls -d ckpt/step* | sed 's/.*step//' | sort -n | tail -1)"
  [ -f "$newest/rank0.safetensors" ] && [ -f "$newest/rank1.safetensors" ] ||
    { echo "kill after ${delay}s: the newest checkpoint ($newest) is not sharded: $(ls "$newest")" >&2; exit 1; }
  "$olm" eval --checkpoint ckpt --data tokens.bin --batches 1 >/dev/null ||
    { echo "kill after ${delay}s: the newest checkpoint ($newest) does not load" >&2; exit 1; }
  echo "killed after ${delay}s: $(ls -a ckpt | grep -v '^\.*$' | tr '\n' ' ')-> newest loads in one process"
done
# And training resumes from it, in one process.
"$olm" resume ckpt --max-steps "$(( $(ls -d ckpt/step* | sed 's/.*step//' | sort -n | tail -1) + 2 ))" >/dev/null 2>&1
echo "resumed in one process and trained 2 more steps"
echo "1 passed, 0 failed"
