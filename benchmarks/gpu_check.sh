#!/usr/bin/env bash
# GPU check, one prepared script for a 10-minute slot on one GPU: sequential, batch,
# prefix and rope2d at N = 1, 4, 8, 16 on random:qwen2.5-1.5b and random:qwen2.5-7b in
# bfloat16 (SQuAD, --ignore-eos, 16 questions x 32 new tokens; the compiled decoding step
# off and on where `pmbench run` has --compile), then every record's telemetry (GPU
# utilisation, memory, power, energy must be measured, not null) and a table in
# OUTPUT_DIR/summary.md. The cells are benchmarks/gpu_check.py's.
#
#   benchmarks/gpu_check.sh [OUTPUT_DIR]     default: results/gpu-check-<UTC time>
#
# Needs an NVIDIA GPU, its driver (nvidia-smi, NVML through nvidia-ml-py) and a CUDA
# build of torch. Without them it stops within seconds, one line, exit code 2. New cells
# start for GPU_CHECK_BUDGET_S seconds (default 480) and the cells get 560 s in all (exit
# 124 past that); the report runs either way. Rerunning with the same OUTPUT_DIR skips
# finished cells. Exit code 1 if a cell failed, was not run or lacks GPU telemetry.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "gpu_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null 2>&1 \
  || fail "no nvidia-smi here: run it on a machine with an NVIDIA GPU and its driver"
timeout 10 nvidia-smi -L >/dev/null 2>&1 \
  || fail "nvidia-smi finds no usable GPU (driver not loaded, or no device)"

PY="${PMBENCH_PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
OUT="${1:-results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
if [[ -z "${PMBENCH_DATA:-}" && -d ../shared/data ]]; then
  PMBENCH_DATA="$(cd ../shared/data && pwd)"
  export PMBENCH_DATA
fi

timeout 30 "$PY" - <<'PYEOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: CUDA is not available to torch {torch.__version__} (CUDA build: "
             f"{torch.version.cuda or 'none'}): run it where a CUDA build of torch sees the GPU")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}", flush=True)
PYEOF

rc=0
timeout 560 "$PY" benchmarks/gpu_check.py run "$OUT" --budget-s "${GPU_CHECK_BUDGET_S:-480}" \
  || rc=$?
"$PY" benchmarks/gpu_check.py report "$OUT" || { s=$?; [[ $rc -ne 0 ]] || rc=$s; }
exit "$rc"
