#!/usr/bin/env bash
# Unpack what the GPU check sent back (gpu_check.sh's RETURN_DIR: gpu-check.tar.gz,
# summary.md, gpu-check.log) into results/gpu/<records folder>/, ready to commit.
#
#   benchmarks/gpu_unpack.sh RETURNED_DIR [DEST]      default DEST: results/gpu
set -euo pipefail
cd "$(dirname "$0")/.."
BACK="${1:?usage: gpu_unpack.sh RETURNED_DIR [DEST]}"
DEST="${2:-results/gpu}"
[[ -f "$BACK/gpu-check.tar.gz" ]] || { echo "gpu_unpack: no $BACK/gpu-check.tar.gz" >&2; exit 2; }
mkdir -p "$DEST"
[[ -f "$DEST/COMMITTED" ]] || cat >"$DEST/COMMITTED" <<'EOF'
Records of GPU checks, committed (benchmarks/README.md, "GPU check"). `pmbench table` reads
them only with --results pointing here or with --include-committed.
EOF
# the records' own folder name is the tarball's top folder; no absolute or parent paths
listing="$(tar -tzf "$BACK/gpu-check.tar.gz")"
top="${listing%%/*}"
if grep -qE '^/|(^|/)\.\.(/|$)' <<<"$listing"; then
  echo "gpu_unpack: the tarball names paths outside its folder" >&2
  exit 2
fi
tar -xzf "$BACK/gpu-check.tar.gz" -C "$DEST" --no-same-owner
for f in summary.md gpu-check.log; do
  [[ -f "$BACK/$f" ]] && cp "$BACK/$f" "$DEST/$top/$f"
done
echo "gpu_unpack: $DEST/$top ($(find "$DEST/$top" -name run.json | wc -l) run records)"
