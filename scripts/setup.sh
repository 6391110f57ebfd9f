#!/usr/bin/env bash
# Installs every dependency olm needs, skipping whatever is already there, and says what it
# does. Heavy things live outside the clone, once per machine: OLM_HOME (default
# ~/.cache/olm) holds a Python virtual environment with the pinned torch wheel (LibTorch)
# and OLMo-core (for the parity tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.sh"
OLM_HOME="${OLM_HOME:-$HOME/.cache/olm}"
VENV="$OLM_HOME/venv"
say() { printf '[setup] %s\n' "$*"; }

apt_packages=(cmake ninja-build g++ pkg-config ccache flatbuffers-compiler libflatbuffers-dev zlib1g-dev
              libcxxopts-dev libgtest-dev libgmock-dev libgloo-dev golang-go bindgen abigail-tools valgrind python3-venv
              fortunes clang-14 libclang-rt-14-dev libfuzzer-14-dev
              libpcre2-dev libsentencepiece-dev sentencepiece libutf8proc-dev)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "apt: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "apt: all ${#apt_packages[@]} packages present"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  say "apt: installing cargo (no Rust toolchain found)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cargo >/dev/null
fi

want="torch==$OLM_TORCH_VERSION ai2-olmo-core==$OLM_OLMO_CORE_VERSION safetensors==$OLM_SAFETENSORS_VERSION numpy
      transformers==$OLM_TRANSFORMERS_VERSION tokenizers==$OLM_TOKENIZERS_VERSION sentencepiece==$OLM_SENTENCEPIECE_VERSION"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$OLM_TORCH_VERSION" "$OLM_OLMO_CORE_VERSION" \
     "$OLM_TRANSFORMERS_VERSION" "$OLM_TOKENIZERS_VERSION" "$OLM_SENTENCEPIECE_VERSION" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
ok = md.version("torch").split("+")[0] == sys.argv[1] and md.version("ai2-olmo-core") == sys.argv[2]
ok = ok and [md.version(p) for p in ("transformers", "tokenizers", "sentencepiece")] == sys.argv[3:6]
md.version("safetensors"); md.version("numpy")
sys.exit(0 if ok else 1)
PY
then
  say "python: $VENV has torch $OLM_TORCH_VERSION and ai2-olmo-core $OLM_OLMO_CORE_VERSION"
else
  # Debian's python3 when present (python3-venv above), else whatever python3 is on PATH.
  py=/usr/bin/python3; [ -x "$py" ] || py="$(command -v python3)"
  say "python: creating $VENV and installing $want (a few GB, once per machine)"
  mkdir -p "$OLM_HOME"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $want
fi
echo "$VENV/bin/python"  > "$OLM_HOME/python-path"
