#!/usr/bin/env bash
# Kills a training process (SIGKILL) at arbitrary moments while it writes a checkpoint every
# step, then checks that the newest checkpoint on disk is complete and loadable and that
# training resumes from it. Repeated with several delays.
# usage: checkpoint_kill_test.sh OLM_BINARY
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/checkpoint_kill_setup.sh" "$1"
# Metrics too: after every kill and resume the file holds each step once (the replayed steps'
# lines, and a line torn by the kill, are dropped when the run resumes).
sed -i 's#"save_folder": "ckpt"#"metrics_path": "metrics.jsonl", "save_folder": "ckpt"#' train.json
for delay in 0.35 0.8 1.3 0.05 2.1; do
  before="$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)"
  # The first run starts training; later ones resume from the newest checkpoint.
  if ls -d ckpt/step* >/dev/null 2>&1; then
    "$olm" resume ckpt >/dev/null 2>&1 &
  else
    "$olm" train --config train.json >/dev/null 2>&1 &
  fi
  pid=$!
  # Let it write at least one new checkpoint, then kill it at an arbitrary moment.
  for _ in $(seq 200); do [ "$(ls ckpt 2>/dev/null | tr '\n' ' ' || true)" != "$before" ] && break; sleep 0.05; done
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  newest="$(ls -d ckpt/step* | sort -t p -k 2 -n | tail -1)"
  "$olm" eval --checkpoint ckpt --data tokens.bin --batches 1 >/dev/null ||
    { echo "kill after ${delay}s: the newest checkpoint ($newest) does not load" >&2; exit 1; }
  echo "killed after ${delay}s: $(ls ckpt | tr '\n' ' ')-> newest loads"
done
# And training resumes from it.
"$olm" resume ckpt --max-steps "$(( $(ls -d ckpt/step* | sed 's/.*step//' | sort -n | tail -1) + 2 ))" >/dev/null 2>&1
echo "resumed and trained 2 more steps"
steps="$(grep -o '"step":[0-9]*' metrics.jsonl | sed 's/[^0-9]//g')"
[ "$steps" = "$(seq "$(echo "$steps" | tail -1)")" ] ||
  { echo "metrics after kills and resumes: steps $(echo $steps) are not 1..N once each" >&2; exit 1; }
echo "metrics: steps 1..$(echo "$steps" | tail -1), each once"
# A flipped byte in the newest checkpoint's metadata: resume refuses it (the metadata's own
# checksum), naming the file and the older checkpoint that would load, and exits non-zero.
newest="$(ls -d ckpt/step* | sort -t p -k 2 -n | tail -1)"
meta="$newest/meta.olmk"
offset=$(( $(stat -c %s "$meta") / 2 ))
byte=$(od -An -tu1 -j "$offset" -N1 "$meta" | tr -d ' ')
printf "$(printf '\\%03o' $(( byte ^ 4 )))" | dd of="$meta" bs=1 seek="$offset" conv=notrunc status=none
if "$olm" resume ckpt --max-steps "$(( ${newest##*step} + 2 ))" >/dev/null 2>resume.err; then
  echo "resume accepted a damaged $meta" >&2; exit 1
fi
grep -q "$meta" resume.err && grep -q "previous checkpoint" resume.err ||
  { echo "resume's refusal names neither $meta nor the previous checkpoint:" >&2; cat resume.err >&2; exit 1; }
echo "a damaged $meta is refused: $(head -c 300 resume.err)"
echo "1 passed, 0 failed"
