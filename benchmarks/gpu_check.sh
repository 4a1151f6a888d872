#!/usr/bin/env bash
# GPU check: the cells of suites/grids/cpu-smoke.yaml on CUDA in bfloat16, then the
# telemetry block of each record, so one can see that GPU utilisation, memory, power and
# energy are real measurements on this machine (not nulls, not zeros).
#
#   benchmarks/gpu_check.sh [OUTPUT_DIR]     default: results/gpu-check-<UTC time>
#
# Needs an NVIDIA GPU, a CUDA build of torch and the NVIDIA driver (NVML, through
# nvidia-ml-py). Without CUDA it stops at once with exit code 2 and says why. The sweep
# gets ten minutes in all (exit code 124 past that); rerunning with the same OUTPUT_DIR
# skips finished cells. Exit code 1 if a cell failed or a record lacks GPU telemetry.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PMBENCH_PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
OUT="${1:-results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
if [[ -z "${PMBENCH_DATA:-}" && -d ../shared/data ]]; then
  PMBENCH_DATA="$(cd ../shared/data && pwd)"
  export PMBENCH_DATA
fi

"$PY" - <<'EOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: CUDA is not available here (torch {torch.__version__}, CUDA build: "
             f"{torch.version.cuda or 'none'}): run it on a machine with an NVIDIA GPU, its "
             "driver and a CUDA build of torch")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}", flush=True)
EOF

rc=0
timeout 600 "$PY" -c "from pmbench.cli import main; main()" sweep suites/grids/cpu-smoke.yaml \
  --set device=cuda --set dtype=bfloat16 --output-dir "$OUT" || rc=$?

# Telemetry of every record this check wrote (also those of an earlier, interrupted try).
"$PY" - "$OUT" <<'EOF' || { s=$?; [[ $rc -ne 0 ]] || rc=$s; }
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
records = sorted(out.glob("*/run.json"))
if not records:
    sys.exit(f"gpu_check: no records in {out}")
bad = []


def g(x):
    return f"{x:.4g}" if isinstance(x, float) else str(x)


for path in records:
    rec = json.loads(path.read_text())
    tel = rec.get("telemetry") or {}
    tp = rec.get("throughput") or {}
    lat = rec.get("latency") or {}
    print(f"\n== {rec['run_id']}: {rec['method']} {rec['suite']} b{rec['branch']} "
          f"on {rec.get('device')} {rec.get('dtype')} ({rec.get('status')}), "
          f"output tok/s {g(tp.get('output_tok_s'))}, ttft_s {g(lat.get('ttft_s'))}, "
          f"tpot_s {g(lat.get('tpot_s'))}")
    print(json.dumps(tel, indent=2))
    if rec.get("status") != "complete":
        bad.append(f"{rec['run_id']}: status {rec.get('status')}")
    elif not str(rec.get("device", "")).startswith("cuda"):
        bad.append(f"{rec['run_id']}: ran on {rec.get('device')}, not CUDA")
    elif tel.get("gpu_util_mean") is None or not tel.get("gpu_mem_peak_bytes"):
        bad.append(f"{rec['run_id']}: no GPU telemetry (nvml_error: {tel.get('nvml_error')})")
if bad:
    sys.exit("gpu_check: " + "; ".join(bad))
print(f"\ngpu_check: {len(records)} records with GPU telemetry in {out}")
EOF
exit "$rc"
