#!/usr/bin/env bash
# Set up (if needed) and run the test suite: ./test.sh [pytest args]
# With a Rust toolchain, the Rust tokenizer trainer's own tests (cargo test) run first.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if command -v cargo >/dev/null 2>&1; then
  cargo test --quiet --manifest-path rustbpe/Cargo.toml
else
  echo "test: no Rust toolchain (cargo): skipping the Rust tokenizer trainer's cargo test" >&2
fi
exec .venv/bin/python -m pytest "$@"
