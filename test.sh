#!/usr/bin/env bash
# Set up (if needed) and run the test suite: ./test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --test
exec .venv/bin/python -m pytest "$@"
