#!/usr/bin/env bash
# Set up nanochat in ./.venv. Idempotent: run it again any time (it only does what is missing).
#   ./setup.sh          the app, its CLI and the Rust tokenizer trainer
#   ./setup.sh --test   also the test tools and the example third-party plugin
set -euo pipefail
cd "$(dirname "$0")"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "nanochat needs Python >= 3.10; found: $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "setup: created .venv with $("$PY" --version)"
fi
VPY=.venv/bin/python
# A failed step stops the set-up, naming the command and showing the end of its output.
step_log="$(mktemp)"
trap 'rm -f "$step_log"' EXIT
run_step() {
  if ! "$@" >"$step_log" 2>&1; then
    echo "setup: FAILED: $*" >&2
    echo "setup: its last lines of output:" >&2
    tail -n 25 "$step_log" | sed 's/^/  | /' >&2
    exit 1
  fi
}
pip_install() { run_step "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

# torch: never replace a torch the user chose (CUDA builds are big and specific).
if "$VPY" -c 'import torch' 2>/dev/null; then
  echo "setup: torch $("$VPY" -c 'import torch; print(torch.__version__)') already installed, left alone"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing torch (CUDA build) from PyPI"
  pip_install "torch>=2.5"
else
  echo "setup: no torch and no NVIDIA GPU, installing the CPU build torch==2.13.0"
  pip_install "torch==2.13.0"
fi

# The project itself (editable), re-installed only when its packaging changed.
extras=""; [ $want_test = 1 ] && extras="[test]"
stamp=".venv/.nanochat-setup"
sig="$(cat pyproject.toml rustbpe/Cargo.toml rustbpe/pyproject.toml rustbpe/src/*.rs 2>/dev/null | cksum) $extras"
installed="$(cat "$stamp" 2>/dev/null || true)"
# an install with the test tools also serves a plain set-up
if [ "$installed" != "$sig" ] && [ "$installed" != "$sig[test]" ] || ! "$VPY" -c 'import nanochat' 2>/dev/null; then
  pip_install -e ".$extras"
  echo "setup: installed nanochat (editable)${extras:+ with test tools}"
  # The Rust library (BPE trainer, CPU decode and training-loss kernels); without a Rust toolchain nanochat falls back to
  # the slow Python trainer and decodes with torch ops.
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if [ -f rustbpe/Cargo.toml ]; then
    if command -v cargo >/dev/null 2>&1; then
      # a toolchain that is there but fails to build the crate is an error, not a silent fallback
      pip_install ./rustbpe
      echo "setup: built the Rust tokenizer trainer and CPU decode and loss kernels (nanochat_rustbpe)"
    else
      echo "setup: warning: no Rust toolchain (cargo) found: tokenizer training will use the slow Python" \
           "trainer (and CPU decoding torch ops). Install Rust from https://rustup.rs and run ./setup.sh again." >&2
    fi
  fi
  if [ $want_test = 1 ] && [ -d plugins/example-task ]; then
    pip_install -e plugins/example-task
    echo "setup: installed the example third-party plugin (tests load it only on request)"
  fi
  echo "$sig" > "$stamp"
else
  echo "setup: nanochat already installed and up to date"
fi
echo "setup: done. Try: .venv/bin/nanochat --help"
