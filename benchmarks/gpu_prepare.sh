#!/usr/bin/env bash
# Fill .device/ (git-ignored) with what the GPU machine lacks, so the GPU check runs there
# with no registry: the wheels of benchmarks/device/carry.txt for Python 3.12 (the image's)
# and 3.11 (this machine's, for benchmarks/gpu_rehearse.sh), the SQuAD file and the default
# model's tokenizer. Writes benchmarks/device/manifest.json (each file's size and sha256),
# which tests/test_device_env.py checks against the travel limit.
#
#   make setup && benchmarks/gpu_prepare.sh [DIR]      default DIR: .device
#
# Then, with the device tool: carry [".device"], command `benchmarks/gpu_check.sh`,
# timeout_s 560 (benchmarks/README.md, "GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
DEV="${1:-.device}"
PY=.venv/bin/python
[[ -x "$PY" ]] || { echo "gpu_prepare: run make setup first" >&2; exit 2; }
DATA="${PMBENCH_DATA:-../shared/data}"
[[ -f "$DATA/squad/dev-v1.1.json" ]] || { echo "gpu_prepare: no $DATA/squad/dev-v1.1.json" >&2; exit 2; }

rm -rf "$DEV/wheels" "$DEV/site" "$DEV/data" "$DEV/tokenizer"
mkdir -p "$DEV/wheels" "$DEV/data/squad"
log="$(mktemp)"
for version in 3.12 3.11; do
  if ! "$PY" -m pip download -q --only-binary=:all: --no-deps --python-version "$version" \
      --dest "$DEV/wheels" -r benchmarks/device/carry.txt >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2
    echo "gpu_prepare: could not download the wheels for Python $version" >&2
    exit 2
  fi
done
rm -f "$log"
cp "$DATA/squad/dev-v1.1.json" "$DEV/data/squad/"
HF_HUB_OFFLINE=1 "$PY" - "$DEV/tokenizer" <<'PYEOF'
import sys

from pmbench.engine.models import load_tokenizer

load_tokenizer().save_pretrained(sys.argv[1])
PYEOF
"$PY" - "$DEV" benchmarks/device/manifest.json <<'PYEOF'
import hashlib
import json
import sys
from pathlib import Path

dev, out = Path(sys.argv[1]), Path(sys.argv[2])
files = {str(p.relative_to(dev)): {"bytes": p.stat().st_size,
                                   "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
         for p in sorted(dev.rglob("*")) if p.is_file()}
out.write_text(json.dumps({"files": files, "bytes": sum(f["bytes"] for f in files.values())},
                          indent=1) + "\n")
print(f"gpu_prepare: {len(files)} files, {sum(f['bytes'] for f in files.values()) / 2**20:.1f} "
      f"MiB in {dev}; carry it: carry [\"{dev}\"]")
PYEOF
