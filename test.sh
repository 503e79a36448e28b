#!/usr/bin/env bash
# Set up (if needed) and run the test suite: ./test.sh [pytest args]
# With a Rust toolchain, the Rust tokenizer trainer's own tests (cargo test) run first.
# The files run side by side on up to 4 worker processes (pytest-xdist; a file stays on one worker, so its
# module fixtures are built once); `./test.sh -n 0` runs everything in this one process.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if command -v cargo >/dev/null 2>&1; then
  cargo test --quiet --manifest-path rustbpe/Cargo.toml
else
  echo "test: no Rust toolchain (cargo): skipping the Rust tokenizer trainer's cargo test" >&2
fi
cores=$(nproc 2>/dev/null || echo 2)
exec .venv/bin/python -m pytest -n "$(( cores < 4 ? cores : 4 ))" --dist loadfile "$@"
