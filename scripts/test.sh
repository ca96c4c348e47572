#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.  Model tests run serially:
# two llama.cpp processes on 2 cores collapse to seconds per token.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
