#!/usr/bin/env bash
# GPU check: one prepared script for one window of GPU time (benchmarks/gpu_check.py's
# stages). On the GPU machine, which reaches no registry: install the wheels that
# benchmarks/gpu_prepare.sh carried in .device/ (into a folder outside the tree, on
# PYTHONPATH before the image's packages), take the data and tokenizer from there, check
# in seconds that everything is here (preflight), then the smoke tier (a small model, the
# four methods, compiled off then on), the matrix (random:qwen2.5-7b eager then compiled,
# random:qwen2.5-1.5b eager; bfloat16, SQuAD, --ignore-eos), the report, and whatever
# happened, the files that come back: RETURN_DIR/{gpu-check.tar.gz, summary.md,
# gpu-check.log} (TORCH_LOGS=recompiles,cudagraphs,perf_hints captured in the log).
#
#   benchmarks/gpu_check.sh [RECORDS_DIR]    default: results/gpu-check-<UTC time>
#
# RETURN_DIR is $OUT (the device tool's) or GPU_CHECK_RETURN, else RECORDS_DIR.
# GPU_CHECK_DEVICE=cpu rehearses it on a CPU (benchmarks/gpu_rehearse.sh): no nvidia-smi,
# the smoke tier CPU-sized, no matrix. New cells start for GPU_CHECK_BUDGET_S seconds
# (default 330) and the cells get GPU_CHECK_LIMIT_S (390) in all: with set-up and preflight
# about 7 minutes, the rest of a 15-minute window left for one rerun (which skips finished
# cells). Exit codes: 2 preflight (one line), 1 a cell failed, was not run or lacks GPU
# telemetry, 124 out of time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

fail() { echo "gpu_check: $*" >&2; exit 2; }

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [[ "$DEVICE" == cuda ]]; then
  command -v nvidia-smi >/dev/null 2>&1 \
    || fail "no nvidia-smi here: run it on a machine with an NVIDIA GPU and its driver"
  timeout 10 nvidia-smi -L >/dev/null 2>&1 \
    || fail "nvidia-smi finds no usable GPU (driver not loaded, or no device)"
fi

PY="${PMBENCH_PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
if [[ "$DEVICE" == cuda ]]; then  # before anything slow: the one thing no carry can bring
  timeout 30 "$PY" - <<'PYEOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: CUDA is not available to torch {torch.__version__} (CUDA build: "
             f"{torch.version.cuda or 'none'}): run it where a CUDA build of torch sees the GPU")
PYEOF
fi
RECORDS="${1:-results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
RETURN="${GPU_CHECK_RETURN:-${OUT:-$RECORDS}}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

# What the image lacks, carried in .device/ (benchmarks/gpu_prepare.sh), installed outside
# the tree: the tree is what travels, and it must stay under the tool's limit.
DEV="${PMBENCH_DEVICE_DIR:-.device}"
if [[ -d "$DEV/wheels" ]]; then
  SITE="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/pmbench-device-site}"
  stamp="$(cat benchmarks/device/carry.txt "$DEV"/wheels/*.whl | cksum | cut -d' ' -f1)"
  if [[ "$(cat "$SITE/.carried" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --find-links "$DEV/wheels" --target "$SITE" \
      -r benchmarks/device/carry.txt >/dev/null || fail "could not install $DEV/wheels"
    echo "$stamp" >"$SITE/.carried"
  fi
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  [[ -n "${PMBENCH_DATA:-}" ]] || export PMBENCH_DATA="$ROOT/$DEV/data"
  [[ -n "${PMBENCH_TOKENIZER:-}" ]] || export PMBENCH_TOKENIZER="$ROOT/$DEV/tokenizer"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -z "${PMBENCH_DATA:-}" && -d ../shared/data ]]; then
    PMBENCH_DATA="$(cd ../shared/data && pwd)"
    export PMBENCH_DATA
  fi
fi

timeout 60 "$PY" benchmarks/gpu_check.py preflight --device "$DEVICE" || exit 2

mkdir -p "$RECORDS" "$RETURN"
LOG="$RECORDS/gpu-check.log"
# Whatever the cells do, the records, summary and log come back.
trap '"$PY" benchmarks/gpu_check.py pack "$RECORDS" "$RETURN" "$LOG" || true' EXIT

rc=0
TORCH_LOGS="${TORCH_LOGS:-recompiles,cudagraphs,perf_hints}" \
  timeout "${GPU_CHECK_LIMIT_S:-390}" "$PY" benchmarks/gpu_check.py run "$RECORDS" \
    --device "$DEVICE" --budget-s "${GPU_CHECK_BUDGET_S:-330}" > >(tee -a "$LOG") 2>>"$LOG" \
  || rc=$?
"$PY" benchmarks/gpu_check.py report "$RECORDS" --device "$DEVICE" || { s=$?; [[ $rc -ne 0 ]] || rc=$s; }
exit "$rc"
