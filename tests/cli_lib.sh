# Sourced by the olm command's end-to-end tests, which all start the same way: strict mode,
# the olm binary as an absolute path, a scratch directory as the working directory (removed
# on exit, with any background job still running), and the helpers below.
# usage: source cli_lib.sh NAME OLM_BINARY
# then:  $olm, $work, fail MESSAGE, expect_exit CODE COMMAND..., expect_message TEXT
set -euo pipefail
cli_test_name="$1"
olm="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
work="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

fail() { echo "$cli_test_name: FAILED: $*" >&2; exit 1; }

# Runs COMMAND with its output in $work/out.txt and $work/err.txt; fails unless it exits CODE.
expect_exit() {
  local want="$1"; shift
  set +e; "$@" >"$work/out.txt" 2>"$work/err.txt"; local got=$?; set -e
  [ "$got" = "$want" ] || { cat "$work/out.txt" "$work/err.txt" >&2; fail "'$*' exited $got, expected $want"; }
}

# Fails unless the last expect_exit's stderr contains TEXT (a fixed string).
expect_message() {
  grep -qF -- "$1" "$work/err.txt" || { cat "$work/err.txt" >&2; fail "error does not mention '$1'"; }
}
