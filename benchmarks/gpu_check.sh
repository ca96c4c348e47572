#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go (about 2 minutes on an H100):
#   1. pytest tests/test_transformers_cuda.py (and tests/test_monitor.py, which reads the real NVML there);
#   2. benchmarks/cuda_check.py on a random-weight Llama built here: the trace's Metric events hold GPU samples;
#   3. that trace opened in the inspector headless: the resources bar shows GPU and VRAM sparklines.
#
# Run from the repository root:
#     OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh            # on the GPU machine
#     OUT=/tmp/gpu_check PY=.venv/bin/python DEVICE=cpu bash benchmarks/gpu_check.sh   # dry run of the script
#
# On a machine whose python lacks this project's dependencies, put their wheels (Python 3.12,
# manylinux x86_64) in .whl/: they are installed with --no-deps into /tmp/site, first on PYTHONPATH.
# Everything printed goes to $OUT/gpu_check.log too; $OUT also gets cuda.gtt (the trace),
# resources.svg (the app's screen) and resources.txt (the resources bar's line and the GPU figures).
# Exit status: the number of failed steps.

set -u
OUT=${OUT:-/tmp/gpu_check}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
HIDDEN=${HIDDEN:-1024}
LAYERS=${LAYERS:-12}
TOKENS=${TOKENS:-1000}
MODEL=${MODEL:-/tmp/gpu_check_model}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
failed=0
step() { echo; echo "=== $* ($(date +%T))"; }
result() { local rc=$1; shift; echo "--- $*: rc=$rc"; [ "$rc" = 0 ] || failed=$((failed + 1)); }

if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then
  step "installing the carried wheels into /tmp/site"
  ls .whl
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 99
  export PYTHONPATH=/tmp/site:$PWD
  if ! $PY -c "import transformers" >/dev/null 2>&1; then
    echo "the carried transformers does not import here; using the installed one:"
    $PY -c "import transformers" 2>&1 | tail -3
    rm -rf /tmp/site/transformers /tmp/site/transformers-*.dist-info
  fi
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv 2>&1
nvidia-smi 2>&1 | head -12
$PY - <<'EOF'
import sys, importlib
print("python", sys.version.split()[0])
for m in ("torch", "transformers", "tokenizers", "huggingface_hub", "textual", "rich", "msgspec", "llguidance",
          "anytree", "platformdirs", "psutil", "pynvml", "numpy"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', '?')}  {getattr(mod, '__file__', '')}")
    except Exception as e:
        print(f"  {m}: MISSING ({type(e).__name__}: {e})")
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import pynvml
    pynvml.nvmlInit()
    print("NVML driver", pynvml.nvmlSystemGetDriverVersion(), "devices", pynvml.nvmlDeviceGetCount())
except Exception as e:
    print("NVML:", type(e).__name__, e)
EOF

step "1. pytest tests/test_transformers_cuda.py tests/test_monitor.py"
timeout 240 $PY -m pytest -v -p no:cacheprovider tests/test_transformers_cuda.py tests/test_monitor.py
result $? "pytest"

step "2a. a random-weight model in $MODEL"
rm -rf "$MODEL"
timeout 120 $PY benchmarks/gpu_check.py make-model "$MODEL" --hidden "$HIDDEN" --layers "$LAYERS"
result $? "make-model"

step "2b. benchmarks/cuda_check.py --model $MODEL --device $DEVICE --tokens $TOKENS"
timeout 180 $PY benchmarks/cuda_check.py --model "$MODEL" --device "$DEVICE" --tokens "$TOKENS" --trace "$OUT/cuda.gtt"
result $? "cuda_check"

step "3. the trace in the app: resources bar"
if [ -f "$OUT/cuda.gtt" ]; then
  timeout 120 $PY benchmarks/gpu_check.py screenshot "$OUT/cuda.gtt" --out "$OUT"
  result $? "screenshot"
else
  result 1 "screenshot (no trace)"
fi

echo
echo "=== failed steps: $failed"
exit "$failed"
