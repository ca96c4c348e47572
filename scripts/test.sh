#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite.  Model tests run serially:
# two llama.cpp processes on 2 cores collapse to seconds per token.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Test-only parts: a real Phoenix (OTLP receiver) and a headless Chromium for the browser test.
log=$(mktemp)
.venv/bin/python -m pip --disable-pip-version-check -q install -e ".[transformers,dev,reach-test]" >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
bash scripts/install_browser.sh
exec .venv/bin/python -m pytest "$@"
