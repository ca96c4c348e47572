#!/usr/bin/env bash
# Idempotent: a .venv-guidance at the repository root with the real guidance 0.3.1, for the
# bridge's tests (guidance_tui/bridge) and for trying `guidance-tui run --python`.
#
# Its own venv: guidance 0.3.1 pins llguidance 1.5.0, ours pins 1.9.1.  guidance is installed
# without its `llamacpp` extra; llama-cpp-python 0.3.36 comes from pip's cache of the portable
# wheel scripts/setup.sh built (the same CMAKE_ARGS if pip has to build it after all).
# Nothing of ours is installed here: the bridge is loaded by path.
# Prints the venv's python on stdout when done (everything else goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-guidance
GUIDANCE_VERSION=0.3.1
LLAMA_CPP_VERSION=0.3.36
py="$VENV/bin/python"
if [ -x "$py" ] && "$py" - "$GUIDANCE_VERSION" "$LLAMA_CPP_VERSION" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import guidance, llama_cpp  # noqa: F401  (both import)
sys.exit(0 if (version("guidance"), version("llama-cpp-python")) == tuple(sys.argv[1:]) else 1)
PYEOF
then
    echo "$py"
    exit 0
fi
[ -x "$py" ] || "$PY" -m venv "$VENV" >&2
pip=("$py" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel setuptools >&2
"${pip[@]}" install "guidance==$GUIDANCE_VERSION" >&2
if ! "$py" -c "import llama_cpp" 2>/dev/null; then
    echo "installing llama-cpp-python $LLAMA_CPP_VERSION (from pip's wheel cache; a portable build otherwise)..." >&2
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${pip[@]}" install "llama-cpp-python==$LLAMA_CPP_VERSION" >&2
fi
"$py" -c "import guidance, llama_cpp" >&2
echo "$py"
